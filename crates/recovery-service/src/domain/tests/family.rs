//! The family rules (organizer-assisted recovery), against a real SQLite file with the
//! injected clock.

use super::*;
use crate::domain::family::FamilyRole;

const DAY: i64 = 24 * HOUR;

/// Family `fam`: organizers `org` (org@family.example) and `org2`, member `kid`.
async fn family(h: &Harness) {
    for (account, role) in [
        ("org", FamilyRole::Organizer),
        ("org2", FamilyRole::Organizer),
        ("kid", FamilyRole::Member),
    ] {
        h.recovery
            .put_family_member(
                "fam",
                account,
                Some(role),
                &format!("{account}@family.example"),
            )
            .await
            .unwrap();
    }
}

impl Harness {
    /// The code of the newest assisted-recovery message.
    async fn assisted_code(&self) -> String {
        self.mail()
            .await
            .into_iter()
            .rev()
            .find(|m| m.kind == "assisted_recovery_code")
            .and_then(|m| m.data["code"].as_str().map(str::to_owned))
            .expect("an assisted-recovery message")
    }

    async fn begin(&self, organizer: &str, member: &str) -> Result<String> {
        self.recovery
            .begin_assisted_recovery("fam", organizer, member, IP, "organizer-browser")
            .await
            .map(|s| s.assisted_flow_id)
    }

    async fn kinds(&self, account: &str) -> Vec<AuditKind> {
        let page = self
            .recovery
            .list_audit_events(account, 100, "")
            .await
            .unwrap();
        assert!(page.chain_valid);
        page.events.into_iter().rev().map(|e| e.kind).collect()
    }
}

#[tokio::test]
async fn an_organizer_recovers_a_member_by_the_family_records_only() {
    let h = harness(Policy::default()).await;
    family(&h).await;
    // The member's own recovery address is not where family mail goes, but it hears of every
    // step, without the code.
    h.enroll("kid", "kid-own@example.com").await;
    h.mail().await;

    let flow = h.begin("org", "kid").await.unwrap();
    let mail = h.mail().await;
    let to: Vec<(&str, &str)> = mail
        .iter()
        .map(|m| (m.kind.as_str(), m.recipient.as_str()))
        .collect();
    assert_eq!(
        to,
        [
            ("assisted_recovery_code", "kid@family.example"),
            ("assisted_recovery_started", "org@family.example"),
            ("assisted_recovery_started", "org2@family.example"),
            ("recovery_by_organizer_started", "kid-own@example.com"),
        ]
    );
    assert!(mail[3].data.get("code").is_none(), "{}", mail[3].data);
    assert_eq!(mail[3].data["organizer_hint"], "o***@family.example");
    assert_eq!(mail[3].data["family_email_hint"], "k***@family.example");
    let code = mail[0].data["code"].as_str().unwrap().to_owned();
    assert!(
        !mail[0].data.to_string().contains("org@"),
        "the member's message never names an organizer's address"
    );
    assert!(
        mail[0].data.get("ip_address").is_none() && mail[0].data.get("user_agent").is_none(),
        "nor the organizer's IP address or browser: {}",
        mail[0].data
    );
    assert_eq!(
        mail[1].data["ip_address"], IP,
        "organizers see where it came from"
    );
    assert_eq!(mail[1].data["by_you"], true);
    assert_eq!(mail[2].data["by_you"], false);
    assert_eq!(mail[2].data["organizer_hint"], "o***@family.example");

    // Completion before verification is refused; verification is retry-safe.
    assert_eq!(
        h.recovery
            .complete_assisted_recovery(&flow, "org")
            .await
            .unwrap_err(),
        Error::AssistedNotVerified
    );
    let until = h
        .recovery
        .verify_assisted_recovery(&flow, &code)
        .await
        .unwrap();
    assert_eq!(until, Timestamp::from_ms(T0 + DAY));
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    assert_eq!(
        h.recovery
            .verify_assisted_recovery(&flow, &spaced)
            .await
            .unwrap(),
        until
    );

    // Another organizer completes it: the member's own code is revoked.
    let done = h
        .recovery
        .complete_assisted_recovery(&flow, "org2")
        .await
        .unwrap();
    assert_eq!(done.account_id, "kid");
    assert!(done.recovery_code_revoked);
    assert!(
        !h.recovery
            .get_recovery_status("kid")
            .await
            .unwrap()
            .enrolled
    );
    let mail = h.mail().await;
    let to: Vec<(&str, &str)> = mail
        .iter()
        .map(|m| (m.kind.as_str(), m.recipient.as_str()))
        .collect();
    assert_eq!(
        to,
        [
            ("assisted_recovery_completed", "kid@family.example"),
            ("recovery_by_organizer_completed", "kid-own@example.com"),
            ("family_member_recovered", "org@family.example"),
            ("family_member_recovered", "org2@family.example"),
        ]
    );
    assert_eq!(mail[0].data["code_revoked"], true);
    assert_eq!(mail[1].data["code_revoked"], true);
    assert_eq!(mail[1].data["organizer_hint"], "o***@family.example");
    assert_eq!(mail[3].data["by_you"], true);

    // Once.
    assert_eq!(
        h.recovery
            .complete_assisted_recovery(&flow, "org")
            .await
            .unwrap_err(),
        Error::AssistedFlowEnded
    );
    // Every step is on the member's trail, naming the organizer.
    assert_eq!(
        h.kinds("kid").await,
        [
            AuditKind::FamilyMemberPut,
            AuditKind::CodeCreated,
            AuditKind::AssistedRecoveryStarted,
            AuditKind::AssistedRecoveryVerified,
            AuditKind::AssistedRecoveryCompleted,
            AuditKind::CodeRevoked,
        ]
    );
    let page = h.recovery.list_audit_events("kid", 100, "").await.unwrap();
    let completed = page
        .events
        .iter()
        .find(|e| e.kind == AuditKind::AssistedRecoveryCompleted)
        .unwrap();
    assert_eq!(completed.details["organizer_account_id"], "org2");
    assert_eq!(completed.details["begun_by"], "org");
    let started = page
        .events
        .iter()
        .find(|e| e.kind == AuditKind::AssistedRecoveryStarted)
        .unwrap();
    assert_eq!(started.details["organizer_account_id"], "org");
    assert_eq!(started.client_ip.as_deref(), Some(IP));
}

#[tokio::test]
async fn the_flow_lives_24_hours_and_its_code_allows_5_submissions() {
    let h = harness(Policy::default()).await;
    family(&h).await;
    let flow = h.begin("org", "kid").await.unwrap();
    let code = h.assisted_code().await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    for left in (1..5).rev() {
        assert_eq!(
            h.recovery
                .verify_assisted_recovery(&flow, wrong)
                .await
                .unwrap_err(),
            Error::EmailCodeMismatch {
                attempts_left: left
            }
        );
    }
    // Malformed codes count nothing.
    assert_eq!(
        h.recovery
            .verify_assisted_recovery(&flow, "12345")
            .await
            .unwrap_err(),
        Error::EmailCodeMalformed
    );
    assert_eq!(
        h.recovery
            .verify_assisted_recovery(&flow, wrong)
            .await
            .unwrap_err(),
        Error::EmailCodeMismatch { attempts_left: 0 }
    );
    assert_eq!(
        h.recovery
            .verify_assisted_recovery(&flow, &code)
            .await
            .unwrap_err(),
        Error::TooManyAttempts,
        "even the right code after five"
    );
    let failed = h
        .kinds("kid")
        .await
        .into_iter()
        .filter(|k| *k == AuditKind::AssistedCodeFailed)
        .count();
    assert_eq!(failed, 5);

    // A fresh flow: the code still works one millisecond before 24 hours, not at 24 hours.
    let flow = h.begin("org", "kid").await.unwrap();
    let code = h.assisted_code().await;
    h.clock.advance(DAY - 1);
    h.recovery
        .verify_assisted_recovery(&flow, &code)
        .await
        .unwrap();
    h.clock.advance(1);
    assert_eq!(
        h.recovery
            .complete_assisted_recovery(&flow, "org")
            .await
            .unwrap_err(),
        Error::AssistedFlowExpired
    );
    assert_eq!(
        h.recovery
            .verify_assisted_recovery(&flow, &code)
            .await
            .unwrap_err(),
        Error::AssistedFlowExpired
    );
    assert!(
        !h.recovery
            .get_family_recovery_status("fam")
            .await
            .unwrap()
            .members
            .iter()
            .any(|m| m.assisted_recovery_pending),
        "an expired flow is not pending"
    );
}

#[tokio::test]
async fn who_may_begin_complete_and_cancel() {
    let h = harness(Policy::default()).await;
    family(&h).await;
    h.recovery
        .put_family_member(
            "other",
            "stranger",
            Some(FamilyRole::Organizer),
            "s@example.com",
        )
        .await
        .unwrap();
    assert!(matches!(
        h.begin("kid", "org").await.unwrap_err(),
        Error::NotFamilyOrganizer(_)
    ));
    assert!(matches!(
        h.begin("stranger", "kid").await.unwrap_err(),
        Error::NotFamilyOrganizer(_)
    ));
    assert_eq!(
        h.begin("org", "stranger").await.unwrap_err(),
        Error::NotFamilyMember
    );
    assert_eq!(
        h.begin("org", "org").await.unwrap_err(),
        Error::SelfRecoveryNotAllowed
    );
    assert!(
        h.mail()
            .await
            .iter()
            .all(|m| !m.kind.starts_with("assisted"))
    );

    let flow = h.begin("org", "kid").await.unwrap();
    let code = h.assisted_code().await;
    h.recovery
        .verify_assisted_recovery(&flow, &code)
        .await
        .unwrap();
    for outsider in ["stranger", "kid"] {
        assert!(matches!(
            h.recovery
                .complete_assisted_recovery(&flow, outsider)
                .await
                .unwrap_err(),
            Error::NotFamilyOrganizer(_)
        ));
    }
    // Refused attempts are on the member's trail, naming who tried: repeats of one refusal
    // fold into one row with the first and the latest who tried, and how many times.
    let page = h.recovery.list_audit_events("kid", 100, "").await.unwrap();
    let refused: Vec<_> = page
        .events
        .iter()
        .filter(|e| e.kind == AuditKind::SubmissionRefused)
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].details["account_id"], "stranger");
    assert_eq!(refused[0].details["last_account_id"], "kid");
    assert_eq!(refused[0].details["count"], "2");
    assert_eq!(refused[0].details["call"], "CompleteAssistedRecovery");
    assert!(matches!(
        h.recovery
            .cancel_assisted_recovery(&flow, "stranger")
            .await
            .unwrap_err(),
        Error::NotFamilyOrganizer(_)
    ));
    assert_eq!(
        h.recovery
            .complete_assisted_recovery("af_notaflow", "org")
            .await
            .unwrap_err(),
        Error::FlowNotFound
    );

    // The member, who did not ask for it, cancels: everyone is told, the flow is over.
    h.recovery
        .cancel_assisted_recovery(&flow, "kid")
        .await
        .unwrap();
    let mail = h.mail().await;
    let to: Vec<(&str, &str, bool)> = mail
        .iter()
        .map(|m| {
            (
                m.kind.as_str(),
                m.recipient.as_str(),
                m.data["by_member"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        to,
        [
            ("assisted_recovery_cancelled", "kid@family.example", true),
            ("assisted_recovery_cancelled", "org@family.example", true),
            ("assisted_recovery_cancelled", "org2@family.example", true),
        ]
    );
    assert_eq!(
        h.recovery
            .complete_assisted_recovery(&flow, "org")
            .await
            .unwrap_err(),
        Error::AssistedFlowEnded
    );
    assert_eq!(
        h.recovery
            .cancel_assisted_recovery(&flow, "org")
            .await
            .unwrap_err(),
        Error::AssistedFlowEnded
    );
    let page = h.recovery.list_audit_events("kid", 100, "").await.unwrap();
    let cancelled = &page.events[0];
    assert_eq!(cancelled.kind, AuditKind::AssistedRecoveryCancelled);
    assert_eq!(cancelled.details["reason"], "cancelled");
    assert_eq!(cancelled.details["ended_by"], "kid");
    assert_eq!(cancelled.details["organizer_account_id"], "org");
}

#[tokio::test]
async fn moving_or_removing_a_member_mid_flow_ends_it() {
    let h = harness(Policy::default()).await;
    family(&h).await;
    let flow = h.begin("org", "kid").await.unwrap();
    let code = h.assisted_code().await;
    h.recovery
        .verify_assisted_recovery(&flow, &code)
        .await
        .unwrap();
    // Moved to another family: the old family's organizers can no longer complete.
    h.recovery
        .put_family_member(
            "other",
            "kid",
            Some(FamilyRole::Member),
            "kid@family.example",
        )
        .await
        .unwrap();
    assert_eq!(
        h.recovery
            .complete_assisted_recovery(&flow, "org")
            .await
            .unwrap_err(),
        Error::AssistedFlowEnded
    );
    assert!(
        h.recovery
            .get_family_recovery_status("fam")
            .await
            .unwrap()
            .members
            .iter()
            .all(|m| m.account_id != "kid")
    );
    let page = h.recovery.list_audit_events("kid", 100, "").await.unwrap();
    assert_eq!(page.events[0].kind, AuditKind::AssistedRecoveryCancelled);
    assert_eq!(page.events[0].details["reason"], "membership_changed");
    assert_eq!(page.events[1].kind, AuditKind::FamilyMemberPut);
    assert_eq!(page.events[1].details["previous_family_id"], "fam");

    // Back in the family, a new flow; removing the organizer who began it ends it.
    h.recovery
        .put_family_member("fam", "kid", Some(FamilyRole::Member), "kid@family.example")
        .await
        .unwrap();
    let flow = h.begin("org", "kid").await.unwrap();
    let code = h.assisted_code().await;
    h.recovery.remove_family_member("fam", "org").await.unwrap();
    assert_eq!(
        h.recovery
            .verify_assisted_recovery(&flow, &code)
            .await
            .unwrap_err(),
        Error::AssistedFlowEnded
    );
    assert_eq!(
        h.recovery
            .remove_family_member("fam", "org")
            .await
            .unwrap_err(),
        Error::NotFamilyMember
    );
    let status = h.recovery.get_family_recovery_status("fam").await.unwrap();
    assert_eq!(status.organizer_count, 1);
    assert!(status.single_organizer);
}

#[tokio::test]
async fn the_members_own_code_ends_pending_assisted_recovery_and_tells_the_organizers() {
    let h = harness(Policy::default()).await;
    family(&h).await;
    let own = h.enroll("kid", "kid-own@example.com").await;
    let assisted = h.begin("org", "kid").await.unwrap();
    let code = h.assisted_code().await;
    h.recovery
        .verify_assisted_recovery(&assisted, &code)
        .await
        .unwrap();
    let status = h.recovery.get_family_recovery_status("fam").await.unwrap();
    let kid = status
        .members
        .iter()
        .find(|m| m.account_id == "kid")
        .unwrap();
    assert!(kid.recovery_code_enrolled && kid.assisted_recovery_pending);

    let flow = h.verified_flow("kid-own@example.com").await;
    h.recovery.recover_account(&flow, &own).await.unwrap();
    let mail = h.mail().await;
    let to: Vec<(&str, &str)> = mail
        .iter()
        .map(|m| (m.kind.as_str(), m.recipient.as_str()))
        .collect();
    assert_eq!(
        to,
        [
            ("recovery_completed", "kid-own@example.com"),
            ("family_member_recovered", "org@family.example"),
            ("family_member_recovered", "org2@family.example"),
        ]
    );
    assert!(mail[1].data.get("organizer_hint").is_none(), "on their own");
    assert!(
        mail[1].data.get("ip_address").is_none(),
        "the member's IP address is not the organizers' to see: {}",
        mail[1].data
    );
    assert_eq!(
        h.recovery
            .complete_assisted_recovery(&assisted, "org")
            .await
            .unwrap_err(),
        Error::AssistedFlowEnded
    );
    // The code is kept (reusable policy).
    assert!(
        h.recovery
            .get_recovery_status("kid")
            .await
            .unwrap()
            .enrolled
    );
    let page = h.recovery.list_audit_events("kid", 100, "").await.unwrap();
    let ended = page
        .events
        .iter()
        .find(|e| e.kind == AuditKind::AssistedRecoveryCancelled)
        .unwrap();
    assert_eq!(ended.details["reason"], "member_recovered");

    // A later recovery, with nothing pending, tells no organizer.
    let flow = h.verified_flow("kid-own@example.com").await;
    h.recovery.recover_account(&flow, &own).await.unwrap();
    let kinds: Vec<String> = h.mail().await.into_iter().map(|m| m.kind).collect();
    assert_eq!(kinds, ["recovery_completed"]);
}

#[tokio::test]
async fn begins_are_limited_and_a_new_begin_cancels_the_earlier_one() {
    let h = harness(Policy::default()).await;
    family(&h).await;
    let first = h.begin("org", "kid").await.unwrap();
    let first_code = h.assisted_code().await;
    let second = h.begin("org2", "kid").await.unwrap();
    assert_eq!(
        h.recovery
            .verify_assisted_recovery(&first, &first_code)
            .await
            .unwrap_err(),
        Error::AssistedFlowEnded
    );
    h.begin("org", "kid").await.unwrap();
    match h.begin("org", "kid").await.unwrap_err() {
        Error::RateLimited {
            retry_after_ms,
            limit,
        } => {
            assert_eq!(limit, "assisted_per_member");
            assert_eq!(retry_after_ms, DAY);
        }
        other => panic!("expected RATE_LIMITED, got {other:?}"),
    }
    // The third begin superseded the second.
    assert_eq!(
        h.recovery
            .verify_assisted_recovery(&second, "000000")
            .await
            .unwrap_err(),
        Error::AssistedFlowEnded
    );
    h.clock.advance(DAY);
    h.begin("org", "kid").await.unwrap();
}

#[tokio::test]
async fn an_organizer_being_recovered_gets_only_the_members_mail() {
    let h = harness(Policy::default()).await;
    family(&h).await;
    h.mail().await;
    h.begin("org", "org2").await.unwrap();
    let to: Vec<(String, String)> = h
        .mail()
        .await
        .into_iter()
        .map(|m| (m.kind, m.recipient))
        .collect();
    assert_eq!(
        to,
        [
            (
                "assisted_recovery_code".to_owned(),
                "org2@family.example".to_owned()
            ),
            (
                "assisted_recovery_started".to_owned(),
                "org@family.example".to_owned()
            ),
        ]
    );
}

/// Joining a family, moving and a new family address are told to the account's recovery
/// address (and to the previous family address), audited, and limited per account; a put that
/// changes nothing or only the role is neither told nor counted.
#[tokio::test]
async fn every_new_family_path_is_told_to_the_recovery_address_and_limited() {
    let h = harness(Policy::default()).await;
    let put = |family: &'static str, role: FamilyRole, email: &'static str| {
        let recovery = h.recovery.clone();
        async move {
            recovery
                .put_family_member(family, "kid", Some(role), email)
                .await
        }
    };
    let to = |mail: &[Mail]| -> Vec<(String, String, bool)> {
        mail.iter()
            .map(|m| {
                (
                    m.data["change"].as_str().unwrap_or_default().to_owned(),
                    m.recipient.clone(),
                    m.data["to_previous_address"] == true,
                )
            })
            .collect()
    };
    // Without an enrolment there is nobody to tell but nothing is lost.
    put("fam", FamilyRole::Member, "kid@family.example")
        .await
        .unwrap();
    assert!(h.mail().await.is_empty());
    h.enroll("kid", "kid-own@example.com").await;
    h.mail().await;

    // The same put again, and a role change alone: nothing told, nothing counted.
    put("fam", FamilyRole::Member, "KID@family.example")
        .await
        .unwrap();
    put("fam", FamilyRole::Organizer, "kid@family.example")
        .await
        .unwrap();
    assert!(h.mail().await.is_empty());

    put("fam", FamilyRole::Member, "drop@attacker.example")
        .await
        .unwrap();
    let mail = h.mail().await;
    assert_eq!(
        to(&mail),
        [
            (
                "address_changed".into(),
                "kid-own@example.com".into(),
                false
            ),
            ("address_changed".into(), "kid@family.example".into(), true),
        ]
    );
    assert_eq!(mail[0].data["family_email_hint"], "d***@attacker.example");
    assert_eq!(mail[0].data["family_id"], "fam");

    put("other", FamilyRole::Member, "drop@attacker.example")
        .await
        .unwrap();
    assert_eq!(
        to(&h.mail().await),
        [("moved".into(), "kid-own@example.com".into(), false)],
        "the family address did not change: only the recovery address is told"
    );
    // Back to the recovery address itself: told there once.
    put("other", FamilyRole::Member, "kid-own@example.com")
        .await
        .unwrap();
    assert_eq!(
        to(&h.mail().await),
        [
            (
                "address_changed".into(),
                "kid-own@example.com".into(),
                false
            ),
            (
                "address_changed".into(),
                "drop@attacker.example".into(),
                true
            ),
        ]
    );
    let page = h.recovery.list_audit_events("kid", 100, "").await.unwrap();
    let put_events: Vec<_> = page
        .events
        .iter()
        .filter(|e| e.kind == AuditKind::FamilyMemberPut)
        .filter_map(|e| e.details.get("change").cloned())
        .collect();
    assert_eq!(
        put_events,
        ["address_changed", "moved", "address_changed", "joined"]
    );

    // Four changes so far (joined, address, moved, address): one more, then RATE_LIMITED,
    // and the membership stays as it was.
    put("fam", FamilyRole::Member, "kid@family.example")
        .await
        .unwrap();
    match put("evil", FamilyRole::Member, "x@attacker.example")
        .await
        .unwrap_err()
    {
        Error::RateLimited { limit, .. } => assert_eq!(limit, "family_changes_per_account"),
        other => panic!("expected RATE_LIMITED, got {other:?}"),
    }
    // A put that changes nothing is still served.
    put("fam", FamilyRole::Member, "kid@family.example")
        .await
        .unwrap();
    let status = h.recovery.get_family_recovery_status("fam").await.unwrap();
    assert_eq!(status.members[0].account_id, "kid");
    h.clock.advance(DAY);
    put("evil", FamilyRole::Member, "x@attacker.example")
        .await
        .unwrap();
}

/// On an ended flow, completes and cancels answer that it ended before whether the caller may
/// act (its id is unguessable: that reveals nothing), so a flood of them writes nothing; a
/// refusal on an open flow is audited, its repeats folded into one row with a count.
#[tokio::test]
async fn refusals_on_ended_flows_write_nothing_and_repeats_fold() {
    let h = harness(Policy::default()).await;
    family(&h).await;
    h.recovery
        .put_family_member(
            "other",
            "stranger",
            Some(FamilyRole::Organizer),
            "s@x.example",
        )
        .await
        .unwrap();
    let flow = h.begin("org", "kid").await.unwrap();
    for _ in 0..20 {
        assert!(matches!(
            h.recovery
                .complete_assisted_recovery(&flow, "stranger")
                .await
                .unwrap_err(),
            Error::NotFamilyOrganizer(_)
        ));
    }
    let page = h.recovery.list_audit_events("kid", 100, "").await.unwrap();
    assert!(page.chain_valid);
    assert_eq!(page.events[0].kind, AuditKind::SubmissionRefused);
    assert_eq!(page.events[0].details["count"], "20");
    assert_eq!(page.events[1].kind, AuditKind::AssistedRecoveryStarted);
    let rows = h.audit_rows("kid").await;

    h.recovery
        .cancel_assisted_recovery(&flow, "kid")
        .await
        .unwrap();
    let rows = rows + 1;
    assert_eq!(h.audit_rows("kid").await, rows);
    for _ in 0..20 {
        assert_eq!(
            h.recovery
                .complete_assisted_recovery(&flow, "stranger")
                .await
                .unwrap_err(),
            Error::AssistedFlowEnded
        );
        assert_eq!(
            h.recovery
                .cancel_assisted_recovery(&flow, "stranger")
                .await
                .unwrap_err(),
            Error::AssistedFlowEnded
        );
    }
    assert_eq!(h.audit_rows("kid").await, rows, "nothing written");
}
