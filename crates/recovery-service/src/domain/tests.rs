//! The rules of recovery, each tested against a real SQLite file with an injected clock.

use std::{sync::Arc, time::Duration};

use recovery_storage::{ConnectOptions, Storage};

use super::notify::AuditKind;
use super::*;
use crate::crypto::{
    KeyRing,
    hasher::{HashParams, Hasher},
};
use crate::time::Timestamp;

const KEY_A: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const KEY_B: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const IP: &str = "203.0.113.7";

fn small_params() -> HashParams {
    HashParams {
        m_kib: 64,
        t: 1,
        p: 1,
    }
}

struct Harness {
    recovery: Recovery,
    clock: FixedClock,
    storage: Storage,
    keys: Arc<KeyRing>,
    _dir: tempfile::TempDir,
}

/// A delivered (claimed and opened) outbox message.
#[derive(Debug)]
struct Mail {
    kind: String,
    recipient: String,
    data: serde_json::Value,
}

async fn harness(policy: Policy) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
    let storage = Storage::connect(&ConnectOptions::new(url)).await.unwrap();
    storage.migrate().await.unwrap();
    let mut h = Harness {
        recovery: Recovery::new(
            storage.clone(),
            Hasher::new(2, small_params(), Duration::from_secs(2)).unwrap(),
            Arc::new(KeyRing::parse(KEY_A).unwrap()),
            Arc::new(FixedClock::at(T0)),
            policy.clone(),
        )
        .unwrap(),
        clock: FixedClock::at(T0),
        storage,
        keys: Arc::new(KeyRing::parse(KEY_A).unwrap()),
        _dir: dir,
    };
    h.rebuild(policy, small_params(), KEY_A);
    h
}

impl Harness {
    /// Replaces the service (same database and clock) with other settings.
    fn rebuild(&mut self, policy: Policy, params: HashParams, keys: &str) {
        self.keys = Arc::new(KeyRing::parse(keys).unwrap());
        self.recovery = Recovery::new(
            self.storage.clone(),
            Hasher::new(2, params, Duration::from_secs(2)).unwrap(),
            Arc::clone(&self.keys),
            Arc::new(self.clock.clone()),
            policy,
        )
        .unwrap();
    }

    /// How many audit rows the account has.
    async fn audit_rows(&self, account: &str) -> usize {
        self.storage
            .list_audit_events(account, None, 1_000_000)
            .await
            .unwrap()
            .len()
    }

    async fn enroll(&self, account: &str, email: &str) -> String {
        self.recovery
            .create_recovery_code(account, email)
            .await
            .unwrap()
            .recovery_code
            .to_string()
    }

    /// Every deliverable message so far, opened; marks them sent.
    async fn mail(&self) -> Vec<Mail> {
        let now = self.clock.now_ms();
        let claimed = self
            .storage
            .claim_outbox("test", 1000, MIN, now)
            .await
            .unwrap();
        let mut out = Vec::new();
        for m in claimed {
            let plain = crate::crypto::unseal(&self.keys, &m.message_id, &m.payload.0).unwrap();
            self.storage
                .mark_outbox_sent(m.id, "test", now)
                .await
                .unwrap();
            out.push(Mail {
                kind: m.kind,
                recipient: m.recipient,
                data: serde_json::from_slice(&plain).unwrap(),
            });
        }
        out
    }

    /// The code of the newest verification message.
    async fn email_code(&self) -> String {
        self.mail()
            .await
            .into_iter()
            .rev()
            .find(|m| m.kind == "verification_code")
            .and_then(|m| m.data["code"].as_str().map(str::to_owned))
            .expect("a verification message")
    }

    async fn verified_flow(&self, email: &str) -> String {
        let flow = self
            .recovery
            .begin_recovery(email, IP, "test-agent")
            .await
            .unwrap();
        let code = self.email_code().await;
        self.recovery
            .verify_email(&flow.flow_id, &code)
            .await
            .unwrap();
        flow.flow_id
    }
}

fn wrong_code(right: &str) -> String {
    loop {
        let other = code::RecoveryCode::generate()
            .unwrap()
            .display()
            .to_string();
        if other != right {
            return other;
        }
    }
}

#[tokio::test]
async fn the_full_recovery_works_twice_with_the_same_reusable_code() {
    let h = harness(Policy::default()).await;
    let code = h.enroll("acct-1", "Ann@Example.com").await;
    assert!(code.starts_with("RC1-"));
    let created = h.mail().await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].kind, "code_created");

    for round in 1..=2u32 {
        h.clock.advance(MIN);
        // Any case, any surrounding spaces: the same address.
        let flow = h
            .recovery
            .begin_recovery("  ann@EXAMPLE.com ", IP, "Firefox")
            .await
            .unwrap();
        assert_eq!(
            flow.expires_at,
            Timestamp::from_ms(h.clock.now_ms() + 30 * MIN)
        );
        let mail = h.mail().await;
        assert_eq!(
            mail.len(),
            1,
            "one message per start: the code, with who asked and from where"
        );
        let verification = &mail[0];
        assert_eq!(verification.kind, "verification_code");
        assert_eq!(
            verification.recipient, "Ann@Example.com",
            "mail goes to the stored address"
        );
        assert_eq!(verification.data["ip_address"], IP);
        assert_eq!(verification.data["user_agent"], "Firefox");
        let email_code = verification.data["code"].as_str().unwrap().to_owned();
        let until = h
            .recovery
            .verify_email(&flow.flow_id, &email_code)
            .await
            .unwrap();
        assert_eq!(until, flow.expires_at);
        let recovered = h
            .recovery
            .recover_account(&flow.flow_id, &code.to_lowercase())
            .await
            .unwrap();
        assert_eq!(recovered.account_id, "acct-1");
        assert!(recovered.new_recovery_code.is_none());
        let status = h.recovery.get_recovery_status("acct-1").await.unwrap();
        assert_eq!(status.use_count, round);
        assert_eq!(
            status.last_used_at,
            Some(Timestamp::from_ms(h.clock.now_ms()))
        );
        assert!(
            h.mail()
                .await
                .iter()
                .any(|m| m.kind == "recovery_completed")
        );
        assert_eq!(
            h.recovery
                .recover_account(&flow.flow_id, &code)
                .await
                .unwrap_err(),
            Error::FlowCompleted,
            "a flow succeeds once"
        );
    }
}

#[tokio::test]
async fn rotate_on_use_returns_a_fresh_code_once_and_kills_the_old_one() {
    let policy = Policy {
        reuse: ReusePolicy::RotateOnUse,
        ..Policy::default()
    };
    let h = harness(policy).await;
    let old = h.enroll("acct", "ann@example.com").await;
    let flow = h.verified_flow("ann@example.com").await;
    let recovered = h.recovery.recover_account(&flow, &old).await.unwrap();
    let new = recovered
        .new_recovery_code
        .expect("a replacement code")
        .to_string();
    assert_ne!(new, old);

    let flow = h.verified_flow("ann@example.com").await;
    assert!(matches!(
        h.recovery.recover_account(&flow, &old).await.unwrap_err(),
        Error::RecoveryCodeMismatch { .. }
    ));
    assert!(h.recovery.recover_account(&flow, &new).await.is_ok());
}

#[tokio::test]
async fn the_email_code_expires_at_exactly_fifteen_minutes() {
    let h = harness(Policy::default()).await;
    h.enroll("acct", "ann@example.com").await;
    let flow = h
        .recovery
        .begin_recovery("ann@example.com", IP, "")
        .await
        .unwrap();
    let code = h.email_code().await;
    h.clock.advance(15 * MIN);
    assert_eq!(
        h.recovery
            .verify_email(&flow.flow_id, &code)
            .await
            .unwrap_err(),
        Error::FlowExpired
    );

    let flow = h
        .recovery
        .begin_recovery("ann@example.com", IP, "")
        .await
        .unwrap();
    let code = h.email_code().await;
    h.clock.advance(15 * MIN - 1);
    assert!(h.recovery.verify_email(&flow.flow_id, &code).await.is_ok());
}

#[tokio::test]
async fn a_flow_expires_at_exactly_thirty_minutes() {
    let h = harness(Policy::default()).await;
    let code = h.enroll("acct", "ann@example.com").await;
    let flow = h.verified_flow("ann@example.com").await;
    h.clock.advance(30 * MIN);
    assert_eq!(
        h.recovery.recover_account(&flow, &code).await.unwrap_err(),
        Error::FlowExpired
    );

    let flow = h.verified_flow("ann@example.com").await;
    h.clock.advance(30 * MIN - 1);
    assert!(h.recovery.recover_account(&flow, &code).await.is_ok());
}

#[tokio::test]
async fn five_wrong_email_codes_use_up_the_flow_even_for_the_right_one() {
    let h = harness(Policy::default()).await;
    h.enroll("acct", "ann@example.com").await;
    let flow = h
        .recovery
        .begin_recovery("ann@example.com", IP, "")
        .await
        .unwrap();
    let right = h.email_code().await;
    let wrong = if right == "000000" {
        "000001"
    } else {
        "000000"
    };
    for left in (0..5).rev() {
        assert_eq!(
            h.recovery
                .verify_email(&flow.flow_id, wrong)
                .await
                .unwrap_err(),
            Error::EmailCodeMismatch {
                attempts_left: left
            }
        );
    }
    assert_eq!(
        h.recovery
            .verify_email(&flow.flow_id, &right)
            .await
            .unwrap_err(),
        Error::TooManyAttempts
    );
    // Malformed codes never count.
    let flow = h
        .recovery
        .begin_recovery("ann@example.com", IP, "")
        .await
        .unwrap();
    let right = h.email_code().await;
    for _ in 0..10 {
        assert_eq!(
            h.recovery
                .verify_email(&flow.flow_id, "12345")
                .await
                .unwrap_err(),
            Error::EmailCodeMalformed
        );
    }
    assert!(h.recovery.verify_email(&flow.flow_id, &right).await.is_ok());
    // A retried VerifyEmail with the right code succeeds again; a wrong one does not.
    assert!(h.recovery.verify_email(&flow.flow_id, &right).await.is_ok());
    assert!(matches!(
        h.recovery
            .verify_email(&flow.flow_id, wrong)
            .await
            .unwrap_err(),
        Error::EmailCodeMismatch { .. }
    ));
}

#[tokio::test]
async fn five_wrong_recovery_codes_use_up_the_flow_and_malformed_ones_count_nothing() {
    let h = harness(Policy::default()).await;
    let code = h.enroll("acct", "ann@example.com").await;
    let flow = h.verified_flow("ann@example.com").await;
    let mut typo = code.clone();
    typo.pop();
    typo.push(if code.ends_with('0') { '1' } else { '0' });
    for _ in 0..10 {
        assert!(matches!(
            h.recovery.recover_account(&flow, &typo).await.unwrap_err(),
            Error::RecoveryCodeMalformed(_)
        ));
    }
    for left in (0..5).rev() {
        assert_eq!(
            h.recovery
                .recover_account(&flow, &wrong_code(&code))
                .await
                .unwrap_err(),
            Error::RecoveryCodeMismatch {
                attempts_left: left
            }
        );
    }
    assert_eq!(
        h.recovery.recover_account(&flow, &code).await.unwrap_err(),
        Error::TooManyAttempts
    );
}

#[tokio::test]
async fn recovery_needs_a_verified_email_first() {
    let h = harness(Policy::default()).await;
    let code = h.enroll("acct", "ann@example.com").await;
    let flow = h
        .recovery
        .begin_recovery("ann@example.com", IP, "")
        .await
        .unwrap();
    assert_eq!(
        h.recovery
            .recover_account(&flow.flow_id, &code)
            .await
            .unwrap_err(),
        Error::EmailNotVerified
    );
    assert_eq!(
        h.recovery
            .recover_account("fl_nope", &code)
            .await
            .unwrap_err(),
        Error::FlowNotFound
    );
    assert_eq!(
        h.recovery
            .recover_account("fl_0000000000000000000000000a", &code)
            .await
            .unwrap_err(),
        Error::FlowNotFound
    );
}

#[tokio::test]
async fn a_new_code_or_a_revocation_cancels_flows_in_progress() {
    let h = harness(Policy::default()).await;
    let old = h.enroll("acct", "ann@example.com").await;
    let verified = h.verified_flow("ann@example.com").await;
    let pending = h
        .recovery
        .begin_recovery("ann@example.com", IP, "")
        .await
        .unwrap();
    let pending_code = h.email_code().await;
    let new = h.enroll("acct", "ann@example.com").await;
    assert!(h.mail().await.iter().any(|m| m.kind == "code_replaced"));
    assert_eq!(
        h.recovery
            .recover_account(&verified, &new)
            .await
            .unwrap_err(),
        Error::FlowCompleted
    );
    assert_eq!(
        h.recovery
            .verify_email(&pending.flow_id, &pending_code)
            .await
            .unwrap_err(),
        Error::FlowCompleted
    );

    let flow = h.verified_flow("ann@example.com").await;
    assert!(matches!(
        h.recovery.recover_account(&flow, &old).await.unwrap_err(),
        Error::RecoveryCodeMismatch { .. }
    ));
    h.recovery
        .revoke_recovery_code("acct", "lost paper")
        .await
        .unwrap();
    assert_eq!(
        h.recovery.recover_account(&flow, &new).await.unwrap_err(),
        Error::FlowCompleted
    );
    assert_eq!(
        h.recovery
            .revoke_recovery_code("acct", "again")
            .await
            .unwrap_err(),
        Error::NotEnrolled
    );
    assert!(
        !h.recovery
            .get_recovery_status("acct")
            .await
            .unwrap()
            .enrolled
    );
    assert!(h.mail().await.iter().any(|m| m.kind == "code_revoked"));
}

#[tokio::test]
async fn ten_wrong_codes_in_a_day_lock_recovery_for_a_day_and_tell_the_owner() {
    let h = harness(Policy::default()).await;
    let code = h.enroll("acct", "ann@example.com").await;
    for _ in 0..2 {
        let flow = h.verified_flow("ann@example.com").await;
        for _ in 0..5 {
            assert!(matches!(
                h.recovery
                    .recover_account(&flow, &wrong_code(&code))
                    .await
                    .unwrap_err(),
                Error::RecoveryCodeMismatch { .. }
            ));
        }
    }
    let locked_at = h.clock.now_ms();
    let mail = h.mail().await;
    assert_eq!(
        mail.iter().filter(|m| m.kind == "recovery_locked").count(),
        1
    );

    // Begin and verify behave as usual; RecoverAccount says locked before any hashing, even
    // for the right code.
    let flow = h.verified_flow("ann@example.com").await;
    let admitted = h
        .recovery
        .hasher()
        .stats()
        .admitted
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        h.recovery.recover_account(&flow, &code).await.unwrap_err(),
        Error::RecoveryLocked {
            locked_until: Timestamp::from_ms(locked_at + 24 * HOUR)
        }
    );
    assert_eq!(
        h.recovery
            .hasher()
            .stats()
            .admitted
            .load(std::sync::atomic::Ordering::Relaxed),
        admitted,
        "no hashing while locked"
    );
    assert_eq!(
        h.recovery
            .get_recovery_status("acct")
            .await
            .unwrap()
            .locked_until,
        Some(Timestamp::from_ms(locked_at + 24 * HOUR))
    );

    h.clock.set(locked_at + 24 * HOUR);
    let flow = h.verified_flow("ann@example.com").await;
    assert!(
        h.recovery.recover_account(&flow, &code).await.is_ok(),
        "unlocked after a day"
    );
    assert_eq!(
        h.recovery
            .get_recovery_status("acct")
            .await
            .unwrap()
            .locked_until,
        None
    );
}

#[tokio::test]
async fn failures_older_than_the_window_do_not_count_toward_a_lock() {
    let h = harness(Policy {
        lockout_threshold: 3,
        ..Policy::default()
    })
    .await;
    let code = h.enroll("acct", "ann@example.com").await;
    let flow = h.verified_flow("ann@example.com").await;
    for _ in 0..2 {
        h.recovery
            .recover_account(&flow, &wrong_code(&code))
            .await
            .unwrap_err();
    }
    h.clock.advance(24 * HOUR);
    let flow = h.verified_flow("ann@example.com").await;
    h.recovery
        .recover_account(&flow, &wrong_code(&code))
        .await
        .unwrap_err();
    assert!(
        h.recovery.recover_account(&flow, &code).await.is_ok(),
        "2 old + 1 new failures: no lock"
    );
}

#[tokio::test]
async fn an_unknown_email_gets_a_flow_that_never_verifies_and_no_mail() {
    let h = harness(Policy::default()).await;
    let flow = h
        .recovery
        .begin_recovery("nobody@example.com", IP, "")
        .await
        .unwrap();
    assert!(flow.flow_id.starts_with("fl_"));
    assert!(h.mail().await.is_empty(), "nothing is sent");
    for code in ["000000", "123456", "999999"] {
        assert!(matches!(
            h.recovery
                .verify_email(&flow.flow_id, code)
                .await
                .unwrap_err(),
            Error::EmailCodeMismatch { .. }
        ));
    }
    assert_eq!(
        h.recovery
            .recover_account(&flow.flow_id, &wrong_code(""))
            .await
            .unwrap_err(),
        Error::EmailNotVerified
    );
}

#[tokio::test]
async fn starts_are_limited_per_email_and_per_ip_with_a_retry_time() {
    let h = harness(Policy::default()).await;
    for _ in 0..5 {
        h.recovery
            .begin_recovery("ann@example.com", "", "")
            .await
            .unwrap();
    }
    match h
        .recovery
        .begin_recovery(" ann@EXAMPLE.com ", "", "")
        .await
        .unwrap_err()
    {
        Error::RateLimited {
            retry_after_ms,
            limit,
        } => {
            assert_eq!(limit, "email_per_hour");
            assert!(retry_after_ms > 0 && retry_after_ms <= HOUR);
        }
        other => panic!("{other:?}"),
    }
    // The per-email limit holds for unknown emails too (no enumeration through limits).
    for _ in 0..5 {
        h.recovery
            .begin_recovery("ghost@example.com", "", "")
            .await
            .unwrap();
    }
    assert!(matches!(
        h.recovery.begin_recovery("ghost@example.com", "", "").await,
        Err(Error::RateLimited { .. })
    ));

    // Per IP: 10 a minute; an IPv6 /64 is one client.
    let h = harness(Policy::default()).await;
    for i in 0..10 {
        let ip = format!("2001:db8:1:2::{i:x}");
        h.recovery
            .begin_recovery(&format!("user{i}@example.com"), &ip, "")
            .await
            .unwrap();
    }
    match h
        .recovery
        .begin_recovery("other@example.com", "2001:db8:1:2:ffff::1", "")
        .await
        .unwrap_err()
    {
        Error::RateLimited { limit, .. } => assert_eq!(limit, "ip_per_minute"),
        other => panic!("{other:?}"),
    }
    assert!(
        h.recovery
            .begin_recovery("other@example.com", "2001:db8:1:3::1", "")
            .await
            .is_ok(),
        "another /64"
    );
    assert!(matches!(
        h.recovery
            .begin_recovery("x@example.com", "not-an-ip", "")
            .await
            .unwrap_err(),
        Error::InvalidClient(_)
    ));
}

#[tokio::test]
async fn a_successful_use_upgrades_outdated_hash_parameters_and_keys() {
    let mut h = harness(Policy::default()).await;
    let code = h.enroll("acct", "ann@example.com").await;
    let before = h
        .storage
        .find_enrollment("acct")
        .await
        .unwrap()
        .unwrap()
        .code
        .unwrap();
    assert_eq!(before.params, "argon2id,m=64,t=1,p=1");

    // New parameters and a rotated key (the old one still listed).
    h.rebuild(
        Policy::default(),
        HashParams {
            m_kib: 128,
            t: 2,
            p: 1,
        },
        &format!("new:{KEY_B},{KEY_A}"),
    );
    let flow = h.verified_flow("ann@example.com").await;
    h.recovery.recover_account(&flow, &code).await.unwrap();
    let after = h
        .storage
        .find_enrollment("acct")
        .await
        .unwrap()
        .unwrap()
        .code
        .unwrap();
    assert_eq!(after.params, "argon2id,m=128,t=2,p=1");
    assert_eq!(after.key_id, "new");
    assert_eq!(after.code_id, before.code_id, "the same code, re-hashed");
    assert_ne!(after.hash, before.hash);

    // Only the new key now: the re-hashed code still works.
    h.rebuild(
        Policy::default(),
        HashParams {
            m_kib: 128,
            t: 2,
            p: 1,
        },
        &format!("new:{KEY_B}"),
    );
    let flow = h.verified_flow("ann@example.com").await;
    assert!(h.recovery.recover_account(&flow, &code).await.is_ok());
}

#[tokio::test]
async fn status_never_shows_the_code_or_the_full_address() {
    let h = harness(Policy::default()).await;
    assert_eq!(
        h.recovery.get_recovery_status("nobody").await.unwrap(),
        Status {
            contact_threshold: 1,
            ..Status::default()
        }
    );
    let created = h
        .recovery
        .create_recovery_code("acct", "ann@example.com")
        .await
        .unwrap();
    let status = h.recovery.get_recovery_status("acct").await.unwrap();
    assert!(status.enrolled);
    assert_eq!(status.code_id.as_deref(), Some(created.code_id.as_str()));
    assert_eq!(status.created_at, Some(Timestamp::from_ms(T0)));
    assert_eq!(status.email_hint.as_deref(), Some("a***@example.com"));
    assert_eq!(
        (status.use_count, status.last_used_at, status.locked_until),
        (0, None, None)
    );
    for bad in ["", &"x".repeat(129), "a\nb"] {
        assert!(matches!(
            h.recovery.get_recovery_status(bad).await.unwrap_err(),
            Error::InvalidAccountId(_)
        ));
    }
}

#[tokio::test]
async fn changing_the_email_moves_recovery_mail_and_tells_both_addresses() {
    let h = harness(Policy::default()).await;
    let code = h.enroll("acct", "old@example.com").await;
    h.mail().await;
    h.recovery
        .update_recovery_email("acct", "new@example.org")
        .await
        .unwrap();
    let mail = h.mail().await;
    let mut told: Vec<&str> = mail
        .iter()
        .filter(|m| m.kind == "email_changed")
        .map(|m| m.recipient.as_str())
        .collect();
    told.sort_unstable();
    assert_eq!(told, ["new@example.org", "old@example.com"]);

    h.recovery
        .begin_recovery("old@example.com", IP, "")
        .await
        .unwrap();
    assert!(
        h.mail().await.is_empty(),
        "the old address no longer recovers"
    );
    let flow = h.verified_flow("new@example.org").await;
    assert!(
        h.recovery.recover_account(&flow, &code).await.is_ok(),
        "the code stays valid"
    );
    assert_eq!(
        h.recovery
            .update_recovery_email("nobody", "x@example.com")
            .await
            .unwrap_err(),
        Error::NotEnrolled
    );
}

#[tokio::test]
async fn an_address_recovers_one_account() {
    let h = harness(Policy::default()).await;
    h.enroll("a", "shared@example.com").await;
    assert_eq!(
        h.recovery
            .create_recovery_code("b", "shared@EXAMPLE.com")
            .await
            .unwrap_err(),
        Error::EmailInUse
    );
    // The whole address is case-folded: the same address, whatever the case.
    assert_eq!(
        h.recovery
            .create_recovery_code("b", " SHARED@Example.COM ")
            .await
            .unwrap_err(),
        Error::EmailInUse
    );
    // Another mailbox is another account.
    assert!(
        h.recovery
            .create_recovery_code("b", "shared2@example.com")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn the_audit_trail_records_each_step_and_pages_newest_first() {
    let h = harness(Policy::default()).await;
    let code = h.enroll("acct", "ann@example.com").await;
    let flow = h.verified_flow("ann@example.com").await;
    h.recovery
        .recover_account(&flow, &wrong_code(&code))
        .await
        .unwrap_err();
    h.recovery.recover_account(&flow, &code).await.unwrap();
    let page = h.recovery.list_audit_events("acct", 0, "").await.unwrap();
    let kinds: Vec<&str> = page.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "RECOVERY_COMPLETED",
            "RECOVERY_CODE_FAILED",
            "EMAIL_VERIFIED",
            "RECOVERY_STARTED",
            "CODE_CREATED"
        ]
    );
    assert!(page.next_page_token.is_empty());
    let first = h.recovery.list_audit_events("acct", 2, "").await.unwrap();
    assert_eq!(first.events.len(), 2);
    let second = h
        .recovery
        .list_audit_events("acct", 2, &first.next_page_token)
        .await
        .unwrap();
    assert_eq!(second.events[0].kind.as_str(), "EMAIL_VERIFIED");
    assert!(
        page.chain_valid && second.chain_valid,
        "an untouched trail verifies"
    );
    assert_eq!(page.first_broken_event_id, None);
    let third = h
        .recovery
        .list_audit_events("acct", 2, &second.next_page_token)
        .await
        .unwrap();
    assert_eq!(third.events.len(), 1);
    assert!(third.next_page_token.is_empty());
    for bad in ["x", "YTE6LTE", "!!"] {
        assert!(matches!(
            h.recovery
                .list_audit_events("acct", 2, bad)
                .await
                .unwrap_err(),
            Error::InvalidPage(_)
        ));
    }
    assert!(matches!(
        h.recovery
            .list_audit_events("acct", -1, "")
            .await
            .unwrap_err(),
        Error::InvalidPage(_)
    ));
    let audit_text = format!("{:?}", page.events);
    assert!(
        !audit_text.contains(&code[4..]),
        "no code in the audit trail"
    );
    assert!(
        !audit_text.contains("ann@example.com"),
        "no full address in the audit trail"
    );
}

#[tokio::test]
async fn a_full_hashing_pool_answers_overloaded() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
    let storage = Storage::connect(&ConnectOptions::new(url)).await.unwrap();
    storage.migrate().await.unwrap();
    let hasher = Hasher::new(1, small_params(), Duration::from_millis(10)).unwrap();
    let recovery = Recovery::new(
        storage,
        hasher.clone(),
        Arc::new(KeyRing::parse(KEY_A).unwrap()),
        Arc::new(FixedClock::at(T0)),
        Policy::default(),
    )
    .unwrap();
    let held = (
        hasher.admit("held-1").await.unwrap(),
        hasher.admit("held-2").await.unwrap(),
    );
    assert_eq!(
        recovery
            .create_recovery_code("acct", "ann@example.com")
            .await
            .unwrap_err(),
        Error::Overloaded
    );
    drop(held);
    assert!(
        recovery
            .create_recovery_code("acct", "ann@example.com")
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_replacement_under_a_new_address_tells_both_addresses_once() {
    let h = harness(Policy::default()).await;
    h.enroll("acct", "old@example.com").await;
    let created: Vec<(String, String)> = h
        .mail()
        .await
        .into_iter()
        .map(|m| (m.kind, m.recipient))
        .collect();
    assert_eq!(
        created,
        [("code_created".to_owned(), "old@example.com".to_owned())]
    );
    h.enroll("acct", "new@example.com").await;
    let mut replaced: Vec<(String, String)> = h
        .mail()
        .await
        .into_iter()
        .map(|m| (m.kind, m.recipient))
        .collect();
    replaced.sort();
    assert_eq!(
        replaced,
        [
            ("code_replaced".to_owned(), "new@example.com".to_owned()),
            ("code_replaced".to_owned(), "old@example.com".to_owned()),
        ]
    );
    let kinds: Vec<&str> = h
        .recovery
        .list_audit_events("acct", 0, "")
        .await
        .unwrap()
        .events
        .into_iter()
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(kinds, ["CODE_REPLACED", "CODE_CREATED"]);
}

/// A flow for an unknown email never verifies, not even with the one code that was made for
/// it (written sealed in a `void` outbox row, never sent): it answers as any wrong code does.
#[tokio::test]
async fn an_unknown_email_flow_refuses_even_its_own_code() {
    use sea_orm::{ConnectionTrait as _, Database, Statement};
    let h = harness(Policy::default()).await;
    let flow = h
        .recovery
        .begin_recovery("nobody@example.com", IP, "agent")
        .await
        .unwrap();
    let url = format!("sqlite://{}?mode=rw", h._dir.path().join("r.db").display());
    let db = Database::connect(&url).await.unwrap();
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT message_id, payload FROM notification_outbox WHERE status = 'void'",
        ))
        .await
        .unwrap()
        .expect("the void verification row");
    let message_id: String = row.try_get("", "message_id").unwrap();
    let payload: String = row.try_get("", "payload").unwrap();
    let plain = crate::crypto::unseal(&h.keys, &message_id, &payload).unwrap();
    let data: serde_json::Value = serde_json::from_slice(&plain).unwrap();
    let code = data["code"].as_str().unwrap().to_owned();
    assert_eq!(
        h.recovery
            .verify_email(&flow.flow_id, &code)
            .await
            .unwrap_err(),
        Error::EmailCodeMismatch { attempts_left: 4 }
    );
    let any_code = crate::domain::code::RecoveryCode::generate()
        .unwrap()
        .display();
    assert_eq!(
        h.recovery
            .recover_account(&flow.flow_id, &any_code)
            .await
            .unwrap_err(),
        Error::EmailNotVerified,
        "never verified, never INTERNAL"
    );
}

/// The typed address of a recovery request is kept nowhere in full: the flow, the rate-limit
/// keys and a never-sent row hold a keyed hash of it.
#[tokio::test]
async fn a_typed_address_is_stored_only_as_a_keyed_hash() {
    use sea_orm::{ConnectionTrait as _, Database, Statement};
    let h = harness(Policy::default()).await;
    h.enroll("acct", "Known.Person@example.com").await;
    h.recovery
        .begin_recovery("Nobody.Here@example.com", IP, "agent")
        .await
        .unwrap();
    h.recovery
        .begin_recovery("known.person@EXAMPLE.com", IP, "agent")
        .await
        .unwrap();
    let url = format!("sqlite://{}?mode=rw", h._dir.path().join("r.db").display());
    let db = Database::connect(&url).await.unwrap();
    for (table, columns) in [
        ("recovery_flows", "flow_id, email_lookup"),
        ("rate_limit_buckets", "*"),
        ("notification_outbox", "message_id, recipient, status"),
    ] {
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT {columns} FROM {table}"),
            ))
            .await
            .unwrap();
        assert!(!rows.is_empty(), "{table} has rows");
        let dump = format!("{rows:?}").to_lowercase();
        assert!(!dump.contains("nobody.here"), "{table}: {dump}");
        if table != "notification_outbox" {
            // Mail to the enrolled address goes to it as stored; elsewhere only a hash.
            assert!(!dump.contains("known.person"), "{table}: {dump}");
        }
    }
}

/// `EMAIL_IN_USE` is not an enrolment oracle: an account claims at most 10 new addresses a
/// day (refused claims count), a refused claim is audited on the claiming account, and
/// nothing is sent to the address it tried.
#[tokio::test]
async fn address_claims_are_limited_per_account_and_refusals_audited() {
    let h = harness(Policy::default()).await;
    h.enroll("victim", "victim@example.com").await;
    h.enroll("prober", "prober0@example.com").await;
    let _ = h.mail().await;
    // The one refused claim: the victim's address.
    assert_eq!(
        h.recovery
            .update_recovery_email("prober", "VICTIM@example.com")
            .await
            .unwrap_err(),
        Error::EmailInUse
    );
    let page = h.recovery.list_audit_events("prober", 0, "").await.unwrap();
    let refused = page
        .events
        .iter()
        .find(|e| e.kind == AuditKind::EmailClaimRefused)
        .expect("the refused claim is audited");
    assert_eq!(refused.details["email_hint"], "V***@example.com");
    assert!(
        h.mail()
            .await
            .iter()
            .all(|m| !m.recipient.contains("victim")),
        "nothing goes to the address a refused claim tried"
    );
    // Keeping the current address is no claim; new addresses are, up to 10 a day.
    h.recovery
        .update_recovery_email("prober", "prober0@example.com")
        .await
        .unwrap();
    for i in 1..=8 {
        h.recovery
            .update_recovery_email("prober", &format!("prober{i}@example.com"))
            .await
            .unwrap();
    }
    // The enrolment itself was claim 1 of the day; the refused one claim 2.
    let err = h
        .recovery
        .update_recovery_email("prober", "prober9@example.com")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::RateLimited {
                limit: "address_claims_per_account",
                ..
            }
        ),
        "{err:?}"
    );
    // Another day, another 10.
    h.clock.advance(24 * HOUR);
    h.recovery
        .update_recovery_email("prober", "prober9@example.com")
        .await
        .unwrap();
}

/// CreateRecoveryCode is limited per account (10 per hour) whatever the address, checked
/// before the hashing pool admits the call: a loop on one account hashes at most 10 codes an
/// hour, and the code it had stays live when it is refused.
#[tokio::test]
async fn creates_are_limited_per_account_before_any_hash() {
    let h = harness(Policy::default()).await;
    let mut last = String::new();
    for _ in 0..10 {
        last = h.enroll("looper", "looper@example.com").await;
    }
    let err = h
        .recovery
        .create_recovery_code("looper", "looper@example.com")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::RateLimited {
                limit: "creates_per_account",
                ..
            }
        ),
        "{err:?}"
    );
    // Refused before admission: the pool admitted 10 calls, not 11.
    let admitted = || {
        h.recovery
            .hasher
            .stats()
            .admitted
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(admitted(), 10);
    // The last code still recovers; other accounts are not limited by this one.
    let flow = h.verified_flow("looper@example.com").await;
    h.recovery.recover_account(&flow, &last).await.unwrap();
    h.enroll("other", "other@example.com").await;
    h.clock.advance(HOUR);
    h.enroll("looper", "looper@example.com").await;
}

/// Every audit event records who called (the certificate identity, or `trusted`) and, for
/// the flow's steps, the end user's client the flow was started with.
#[tokio::test]
async fn audit_events_record_the_caller_and_the_flows_client() {
    let h = harness(Policy::default()).await;
    super::caller::scope(
        "spiffe://platform/ns/auth/sa/auth-service".to_owned(),
        h.enroll("acct", "ann@example.com"),
    )
    .await;
    let flow = h
        .recovery
        .begin_recovery("ann@example.com", IP, "Firefox")
        .await
        .unwrap();
    let code = h.email_code().await;
    h.recovery.verify_email(&flow.flow_id, "000000").await.ok();
    h.recovery.verify_email(&flow.flow_id, &code).await.unwrap();
    let page = h.recovery.list_audit_events("acct", 0, "").await.unwrap();
    let created = page
        .events
        .iter()
        .find(|e| e.kind == AuditKind::CodeCreated)
        .unwrap();
    assert_eq!(
        created.details["caller"],
        "spiffe://platform/ns/auth/sa/auth-service"
    );
    for kind in [AuditKind::EmailCodeFailed, AuditKind::EmailVerified] {
        let event = page.events.iter().find(|e| e.kind == kind).unwrap();
        assert_eq!(event.details["caller"], "trusted", "{kind:?}");
        assert_eq!(
            event.client_ip.as_deref(),
            Some(IP),
            "{kind:?} keeps the flow's client"
        );
        assert_eq!(
            event.client_user_agent.as_deref(),
            Some("Firefox"),
            "{kind:?}"
        );
    }
    assert_eq!(
        page.events
            .iter()
            .find(|e| e.kind == AuditKind::EmailCodeFailed)
            .unwrap()
            .details["attempts_left"],
        "4"
    );
}

/// Refusals before any check are audited: a locked account, a flow out of submissions.
#[tokio::test]
async fn refused_recovery_submissions_are_audited() {
    let h = harness(Policy {
        lockout_threshold: 2,
        ..Policy::default()
    })
    .await;
    let code = h.enroll("acct", "ann@example.com").await;
    let flow = h.verified_flow("ann@example.com").await;
    for _ in 0..2 {
        h.recovery
            .recover_account(&flow, &wrong_code(&code))
            .await
            .unwrap_err();
    }
    assert!(matches!(
        h.recovery.recover_account(&flow, &code).await.unwrap_err(),
        Error::RecoveryLocked { .. }
    ));
    let page = h.recovery.list_audit_events("acct", 0, "").await.unwrap();
    let refused = page
        .events
        .iter()
        .find(|e| e.kind == AuditKind::SubmissionRefused)
        .expect("the refusal is audited");
    assert_eq!(refused.details["reason"], "RECOVERY_LOCKED");
    assert_eq!(refused.details["flow_id"], flow);
    assert!(
        page.events
            .iter()
            .any(|e| e.kind == AuditKind::RecoveryLocked)
    );
    assert!(page.chain_valid);
}

/// A page of the trail is bounded by size as well as count: 500 of the largest events the
/// service writes do not fit its 64 KiB response, so the page stops short with a token, and
/// the pages together hold every event once.
#[tokio::test]
async fn every_audit_page_fits_the_response_limit() {
    use prost::Message as _;
    let h = harness(Policy::default()).await;
    for i in 0..600 {
        h.storage
            .append_audit(recovery_storage::model::NewAuditEvent {
                personal: Default::default(),
                event_id: format!("ev_{i:026}"),
                account_id: "a".repeat(128),
                serialize_on: None,
                kind: "CODE_REVOKED".into(),
                occurred_at: Timestamp::from_ms(T0 + i),
                client: recovery_storage::model::ClientInfo {
                    ip: Some("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff".into()),
                    user_agent: Some("u".repeat(256)),
                },
                details: [
                    ("reason".to_owned(), "r".repeat(256)),
                    ("code_id".to_owned(), format!("rc_{i:026}")),
                    (
                        "caller".to_owned(),
                        "spiffe://example.org/ns/auth/sa/auth".into(),
                    ),
                ]
                .into(),
                coalesce: None,
            })
            .await
            .unwrap();
    }
    let account = "a".repeat(128);
    let mut token = String::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    loop {
        let page = h
            .recovery
            .list_audit_events(&account, 500, &token)
            .await
            .unwrap();
        let wire = crate::grpc::recovery_code::audit_page(page);
        let bytes = wire.encoded_len();
        assert!(
            bytes < crate::server::MAX_MESSAGE_BYTES,
            "a page of {} events is {bytes} bytes",
            wire.events.len()
        );
        pages += 1;
        for e in &wire.events {
            assert!(seen.insert(e.event_id.clone()), "{} twice", e.event_id);
        }
        if wire.next_page_token.is_empty() {
            break;
        }
        token = wire.next_page_token;
    }
    assert_eq!(seen.len(), 600);
    assert!(pages > 2, "pages stop short of 500 events: {pages}");
}

/// Alternating the refused call between two flows does not defeat the fold: repeats of one
/// refusal fold whatever the flow, keeping the latest flow as `last_flow_id`.
#[tokio::test]
async fn refusals_alternating_between_flows_fold_too() {
    let h = harness(Policy {
        lockout_threshold: 2,
        ..Policy::default()
    })
    .await;
    let code = h.enroll("acct", "acct@example.com").await;
    let a = h.verified_flow("acct@example.com").await;
    let b = h.verified_flow("acct@example.com").await;
    let wrong = wrong_code(&code);
    for _ in 0..2 {
        let _ = h.recovery.recover_account(&a, &wrong).await;
    }
    let rows = h.audit_rows("acct").await;
    for i in 0..40 {
        let flow = if i % 2 == 0 { &a } else { &b };
        assert!(matches!(
            h.recovery.recover_account(flow, &code).await.unwrap_err(),
            Error::RecoveryLocked { .. }
        ));
    }
    assert!(h.audit_rows("acct").await <= rows + 1);
    let page = h.recovery.list_audit_events("acct", 0, "").await.unwrap();
    assert!(page.chain_valid);
    let refused = &page.events[0];
    assert_eq!(refused.kind, AuditKind::SubmissionRefused);
    assert_eq!(refused.details["reason"], "RECOVERY_LOCKED");
    assert_eq!(refused.details["last_flow_id"], b);
    let count: u32 = refused
        .details
        .get("count")
        .map_or(1, |c| c.parse().unwrap());
    assert!(count >= 40, "{count}");
}

/// A flood of one refusal on one flow folds into one audit row with the right count (a new
/// row once the hour since its first is over); the trail still verifies, and an event of
/// another kind in between starts a new row.
#[tokio::test]
async fn a_flood_of_refusals_leaves_a_handful_of_rows_with_the_right_count() {
    const FLOOD: u64 = 4_000;
    // A flow that outlives the hour, so that the second half of the flood is refused alike.
    let h = harness(Policy {
        flow_ttl_ms: 3 * HOUR,
        ..Policy::default()
    })
    .await;
    let code = h.enroll("acct", "acct@example.com").await;
    let flow = h.verified_flow("acct@example.com").await;
    let wrong = wrong_code(&code);
    for _ in 0..5 {
        let _ = h.recovery.recover_account(&flow, &wrong).await;
    }
    let rows_before = h.audit_rows("acct").await;
    for i in 0..FLOOD {
        if i == FLOOD / 2 {
            h.clock.advance(HOUR);
        }
        assert_eq!(
            h.recovery.recover_account(&flow, &code).await.unwrap_err(),
            Error::TooManyAttempts
        );
    }
    let page = h.recovery.list_audit_events("acct", 0, "").await.unwrap();
    assert!(page.chain_valid);
    let refused: Vec<_> = page
        .events
        .iter()
        .filter(|e| e.kind == AuditKind::SubmissionRefused)
        .collect();
    assert_eq!(refused.len(), 2, "one row per hour: {refused:?}");
    let counted: u64 = refused
        .iter()
        .map(|e| e.details["count"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, FLOOD);
    assert_eq!(refused[0].details["reason"], "TOO_MANY_ATTEMPTS");
    assert!(refused[0].details.contains_key("last_at"));
    assert_eq!(h.audit_rows("acct").await, rows_before + 2);
}

/// 20 starts per client IP per hour (10 a minute), IPv6 by its /64; a call without an IP
/// address is limited per email address only (the auth service always has the end user's
/// address; one without it cannot share a bucket with everyone else).
#[tokio::test]
async fn starts_are_limited_per_ip_per_hour_and_per_email_without_an_ip() {
    let h = harness(Policy::default()).await;
    for i in 0..20 {
        if i == 10 {
            h.clock.advance(MIN + 1);
        }
        h.recovery
            .begin_recovery(&format!("user{i}@example.com"), "2001:db8:1:2::7", "agent")
            .await
            .unwrap();
    }
    h.clock.advance(MIN + 1);
    let err = h
        .recovery
        .begin_recovery("another@example.com", "2001:db8:1:2:ffff::1", "agent")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RateLimited { limit: "ip_per_hour", retry_after_ms } if retry_after_ms > 50 * MIN),
        "{err:?}"
    );
    // Another /64 is another bucket.
    h.recovery
        .begin_recovery("another@example.com", "2001:db8:1:3::7", "agent")
        .await
        .unwrap();
    // Without an IP address: per email address only.
    for i in 0..30 {
        h.recovery
            .begin_recovery(&format!("noip{i}@example.com"), "", "")
            .await
            .unwrap();
    }
    for _ in 0..5 {
        h.recovery
            .begin_recovery("same@example.com", "", "")
            .await
            .unwrap();
    }
    let err = h
        .recovery
        .begin_recovery("SAME@example.com", "", "")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::RateLimited {
                limit: "email_per_hour",
                ..
            }
        ),
        "{err:?}"
    );
}

/// A sent message's sealed payload is wiped: a code lives in the database only until its
/// message is out.
#[tokio::test]
async fn sent_messages_keep_no_payload() {
    use sea_orm::{ConnectionTrait as _, Database, Statement};
    let h = harness(Policy::default()).await;
    h.enroll("acct", "ann@example.com").await;
    h.recovery
        .begin_recovery("ann@example.com", IP, "agent")
        .await
        .unwrap();
    assert_eq!(
        h.mail().await.len(),
        2,
        "created notice and verification code sent"
    );
    let url = format!("sqlite://{}?mode=rw", h._dir.path().join("r.db").display());
    let db = Database::connect(&url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT status, payload FROM notification_outbox",
        ))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for row in rows {
        let status: String = row.try_get("", "status").unwrap();
        let payload: String = row.try_get("", "payload").unwrap();
        assert_eq!(status, "sent");
        assert!(payload.is_empty(), "payload kept after sending");
    }
}

/// A submission whose caller goes away once it is counted still counts as a failure: the
/// failure is recorded before hashing, and what follows the hash runs to its end. Three
/// abandoned wrong codes lock an account whose threshold is three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_submissions_still_count_toward_the_lock() {
    let mut h = harness(Policy {
        lockout_threshold: 3,
        ..Policy::default()
    })
    .await;
    // A slow hash, so that callers give up while it runs.
    h.rebuild(
        Policy {
            lockout_threshold: 3,
            ..Policy::default()
        },
        HashParams {
            m_kib: 16 * 1024,
            t: 3,
            p: 1,
        },
        KEY_A,
    );
    let code = h.enroll("acct", "ann@example.com").await;
    let flow = h.verified_flow("ann@example.com").await;
    for n in 1..=3 {
        let recovery = h.recovery.clone();
        let (flow_id, bad) = (flow.clone(), wrong_code(&code));
        let call = tokio::spawn(async move { recovery.recover_account(&flow_id, &bad).await });
        // Wait until the submission is counted, then hang up.
        loop {
            let f = h.storage.find_flow(&flow).await.unwrap().unwrap();
            if f.recovery_attempts >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        call.abort();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // The lock, its notice and its audit event, although every caller left.
    loop {
        let locked = h
            .recovery
            .get_recovery_status("acct")
            .await
            .unwrap()
            .locked_until
            .is_some();
        let page = h.recovery.list_audit_events("acct", 0, "").await.unwrap();
        let audited = page
            .events
            .iter()
            .any(|e| e.kind == AuditKind::RecoveryLocked);
        if locked && audited {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "abandoned failures: locked {locked}, lock audited {audited}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        h.mail().await.iter().any(|m| m.kind == "recovery_locked"),
        "the owner is told"
    );
}

mod family;

/// Every submission that is counted is checked and recorded, whenever its caller hangs up:
/// before, while or after it is counted. A caller who hung up between the count and the check
/// once left a counted failure that nothing recorded (no audit event, no notice of the lock it
/// could cause).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_counted_submission_is_checked_whenever_its_caller_hangs_up() {
    let h = harness(Policy {
        lockout_threshold: 1_000,
        starts_per_email_per_hour: 100,
        ..Policy::default()
    })
    .await;
    let code = h.enroll("acct", "ann@example.com").await;
    let mut flows = Vec::new();
    for f in 0..4u64 {
        let flow = h.verified_flow("ann@example.com").await;
        for i in 0..5u64 {
            let recovery = h.recovery.clone();
            let (flow_id, bad) = (flow.clone(), wrong_code(&code));
            let call = tokio::spawn(async move { recovery.recover_account(&flow_id, &bad).await });
            // A different moment each time, from at once to 4 ms in.
            tokio::time::sleep(Duration::from_micros((f * 5 + i) * 200)).await;
            call.abort();
        }
        flows.push(flow);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut counted = 0;
        for flow in &flows {
            counted += h
                .storage
                .find_flow(flow)
                .await
                .unwrap()
                .unwrap()
                .recovery_attempts;
        }
        let page = h.recovery.list_audit_events("acct", 100, "").await.unwrap();
        let recorded = page
            .events
            .iter()
            .filter(|e| e.kind == AuditKind::RecoveryCodeFailed)
            .count();
        if usize::try_from(counted).unwrap() == recorded {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{counted} submissions counted, {recorded} recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// At most `SUBMISSIONS_IN_FLIGHT` submission tasks run at once on a replica (beyond them a
/// call is `OVERLOADED` at once); a task runs on after its caller hangs up, and shutdown waits
/// for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_in_flight_are_bounded_and_drained_at_shutdown() {
    let submissions = super::Submissions::default();
    let (release, released) = tokio::sync::watch::channel(false);
    let finished = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut callers = Vec::new();
    for _ in 0..super::SUBMISSIONS_IN_FLIGHT {
        let (submissions, mut released, finished) =
            (submissions.clone(), released.clone(), Arc::clone(&finished));
        callers.push(tokio::spawn(async move {
            submissions
                .run(async move {
                    let _ = released.wait_for(|go| *go).await;
                    finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(())
                })
                .await
        }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while submissions.0.available_permits() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the tasks never started"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(matches!(
        submissions.run(async { Ok(()) }).await,
        Err(Error::Overloaded)
    ));
    // Every caller hangs up: the tasks run on, and shutdown waits for them.
    for caller in callers {
        caller.abort();
    }
    assert!(!submissions.drained(Duration::from_millis(50)).await);
    release.send(true).unwrap();
    assert!(submissions.drained(Duration::from_secs(10)).await);
    assert_eq!(
        finished.load(std::sync::atomic::Ordering::SeqCst),
        super::SUBMISSIONS_IN_FLIGHT
    );
}

/// A forget with mail still queued: nothing more reaches the person (their queued messages are
/// gone), the family's organizer gets one message that says only that a member left, and the
/// platform hears `account.forgotten`.
#[tokio::test]
async fn a_forgotten_person_gets_no_more_mail_and_the_organizer_hears_only_that_a_member_left() {
    let h = harness(Policy::default()).await;
    h.enroll("kid", "kid@example.com").await;
    h.recovery
        .put_family_member(
            "fam",
            "org",
            Some(recovery_storage::model::FamilyRole::Organizer),
            "org@fam.example",
        )
        .await
        .unwrap();
    h.recovery
        .put_family_member(
            "fam",
            "kid",
            Some(recovery_storage::model::FamilyRole::Member),
            "kid@fam.example",
        )
        .await
        .unwrap();
    h.recovery
        .begin_recovery("kid@example.com", "198.51.100.7", "Agent/1")
        .await
        .unwrap();
    // Queued, not yet delivered: the verification code, the created and family notices.
    h.recovery.forget_account("kid", "asked").await.unwrap();
    let mail = h.mail().await;
    assert!(
        mail.iter()
            .all(|m| !m.recipient.contains("kid@") && !m.recipient.contains("kid@fam")),
        "{mail:?}"
    );
    let left: Vec<&Mail> = mail
        .iter()
        .filter(|m| m.kind == "family_member_left")
        .collect();
    assert_eq!(left.len(), 1, "{mail:?}");
    assert_eq!(left[0].recipient, "org@fam.example");
    let told = left[0].data.to_string();
    for personal in ["kid", "198.51.100.7", "Agent/1"] {
        assert!(!told.contains(personal), "{told}");
    }
    // A second forget sends nothing.
    h.recovery.forget_account("kid", "again").await.unwrap();
    assert!(h.mail().await.is_empty());
}

/// Every wait of recovery contacts, crossed at -1 ms and at 0 ms with the injected clock:
/// the invitation (7 d), the activation (7 d), the gathering (24 h), the waiting period
/// (48 h), the contact's cooldown (7 d) and the flow's life past its waiting period (24 h).
#[tokio::test]
async fn every_contact_wait_is_crossed_at_minus_one_and_zero_ms() {
    const DAY: i64 = 24 * HOUR;
    let h = harness(Policy::default()).await;
    let r = &h.recovery;
    let at = |ms: i64| h.clock.set(ms);
    r.create_recovery_code("ann", "ann@example.com")
        .await
        .unwrap();
    for c in ["bob", "late"] {
        r.invite_recovery_contact("ann", c, &format!("{c}@example.net"))
            .await
            .unwrap();
    }
    // The invitation: open until 7 d, not at 7 d.
    at(T0 + 7 * DAY);
    assert!(matches!(
        r.accept_recovery_contact("ann", "late").await,
        Err(Error::NotRecoveryContact(_))
    ));
    at(T0 + 7 * DAY - 1);
    let active_from = r
        .accept_recovery_contact("ann", "bob")
        .await
        .unwrap()
        .as_ms();
    assert_eq!(active_from, T0 + 14 * DAY - 1);

    // The activation: not an active contact 1 ms before, active at the instant.
    at(active_from - 1);
    let f1 = r
        .begin_contact_recovery("ann@example.com", IP, "ua")
        .await
        .unwrap();
    assert_eq!(f1.expires_at.as_ms(), active_from - 1 + DAY);
    assert!(matches!(
        r.vouch_for_recovery(&f1.contact_flow_id, "bob", &f1.confirmation_code)
            .await,
        Err(Error::NotRecoveryContact(_))
    ));
    // The gathering: a vouch 1 ms before its end counts.
    let v1 = active_from - 1 + DAY - 1;
    at(v1);
    let vouched = r
        .vouch_for_recovery(&f1.contact_flow_id, "bob", &f1.confirmation_code)
        .await
        .unwrap();
    let c1 = v1 + 2 * DAY;
    assert_eq!(vouched.completes_at.map(|t| t.as_ms()), Some(c1));
    // The waiting period: pending 1 ms before its end, complete at it.
    at(c1 - 1);
    assert_eq!(
        r.complete_contact_recovery(&f1.contact_flow_id).await,
        Err(Error::RecoveryPending {
            completes_at: Some(Timestamp::from_ms(c1))
        })
    );
    at(c1);
    let done = r
        .complete_contact_recovery(&f1.contact_flow_id)
        .await
        .unwrap();
    assert_eq!(done.account_id, "ann");
    assert!(done.recovery_code_revoked);

    // The gathering ends at its instant.
    r.create_recovery_code("ann", "ann@example.com")
        .await
        .unwrap();
    let t2 = c1 + 1;
    at(t2);
    let f2 = r
        .begin_contact_recovery("ann@example.com", IP, "ua")
        .await
        .unwrap();
    at(t2 + DAY);
    assert_eq!(
        r.vouch_for_recovery(&f2.contact_flow_id, "bob", &f2.confirmation_code)
            .await,
        Err(Error::FlowExpired)
    );

    // The cooldown: bob vouched at v1; not again for 7 d.
    let t3 = v1 + 7 * DAY - HOUR;
    at(t3);
    let f3 = r
        .begin_contact_recovery("ann@example.com", IP, "ua")
        .await
        .unwrap();
    at(v1 + 7 * DAY - 1);
    assert!(matches!(
        r.vouch_for_recovery(&f3.contact_flow_id, "bob", &f3.confirmation_code)
            .await,
        Err(Error::RateLimited {
            retry_after_ms: 1,
            limit: "vouches_per_contact"
        })
    ));
    at(v1 + 7 * DAY);
    let c3 = r
        .vouch_for_recovery(&f3.contact_flow_id, "bob", &f3.confirmation_code)
        .await
        .unwrap()
        .completes_at
        .unwrap()
        .as_ms();
    // The flow's life past its waiting period: 24 h, not a millisecond more.
    at(c3 + DAY);
    assert_eq!(
        r.cancel_contact_recovery(&f3.contact_flow_id, "ann").await,
        Err(Error::FlowExpired)
    );
    assert_eq!(
        r.complete_contact_recovery(&f3.contact_flow_id).await,
        Err(Error::FlowExpired)
    );
    at(c3 + DAY - 1);
    r.complete_contact_recovery(&f3.contact_flow_id)
        .await
        .unwrap();
}

/// A threshold raised during a flow stops a waiting period it no longer meets; lowered, it
/// never eases a flow in progress.
#[tokio::test]
async fn a_threshold_change_during_a_flow_raises_it_but_never_lowers_it() {
    let h = harness(Policy {
        contact_activation_ms: 1,
        ..Policy::default()
    })
    .await;
    let r = &h.recovery;
    r.create_recovery_code("ann", "ann@example.com")
        .await
        .unwrap();
    for c in ["bob", "cat", "dan"] {
        r.invite_recovery_contact("ann", c, &format!("{c}@example.net"))
            .await
            .unwrap();
        r.accept_recovery_contact("ann", c).await.unwrap();
    }
    r.set_recovery_contact_threshold("ann", 2).await.unwrap();
    h.clock.advance(1);
    let f = r
        .begin_contact_recovery("ann@example.com", IP, "ua")
        .await
        .unwrap();
    r.set_recovery_contact_threshold("ann", 1).await.unwrap();
    let one = r
        .vouch_for_recovery(&f.contact_flow_id, "bob", &f.confirmation_code)
        .await
        .unwrap();
    assert_eq!((one.vouches, one.threshold, one.completes_at), (1, 2, None));
    let two = r
        .vouch_for_recovery(&f.contact_flow_id, "cat", &f.confirmation_code)
        .await
        .unwrap();
    assert!(two.completes_at.is_some());
    r.set_recovery_contact_threshold("ann", 3).await.unwrap();
    h.clock.advance(HOUR);
    assert_eq!(
        r.complete_contact_recovery(&f.contact_flow_id).await,
        Err(Error::RecoveryPending { completes_at: None })
    );
    assert!(
        h.storage
            .find_contact_flow(&f.contact_flow_id)
            .await
            .unwrap()
            .unwrap()
            .completes_at
            .is_none()
    );
}
